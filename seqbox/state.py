"""The per-user state directory: ``$XDG_RUNTIME_DIR/seqbox``, else
``~/.cache/seqbox``. Mode 0700, owned by the user, never a symlink, never in a
shared, predictable /tmp path.

Everything below it is reached through a directory file descriptor and opened
with ``O_NOFOLLOW``, so a planted symlink cannot redirect seqbox's writes.
"""

from __future__ import annotations

import errno
import os
import stat

from seqbox.errors import StateError

#: errors the CLI explains itself (full disk, too many open files): not wrapped here
_SYSTEM_LIMITS = (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT, errno.EROFS)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    #: opens one directory ``name`` under ``dir_fd`` (``shown`` names it in
    #: messages): its fd, or None when it does not exist
    Opener = Callable[[int, str, str], int | None]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def state_dir_path(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    override = env.get("SEQBOX_STATE_DIR")
    if override:
        return os.path.abspath(override)
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            info = os.stat(runtime)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
                return os.path.join(runtime, "seqbox")
        except OSError:
            pass
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".cache", "seqbox")


def log_dir_default(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(state_dir_path(environ), "logs")


def open_state_dir(environ: Mapping[str, str] | None = None) -> int:
    """Create (mode 0700) and open the state directory; return a directory fd.

    Refuses a symlink, a directory owned by someone else, and fixes a mode that
    lets others in.
    """
    path = state_dir_path(environ)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as err:
        if err.errno in _SYSTEM_LIMITS:
            raise
        raise StateError(f"cannot create {parent}: {err.strerror}") from None
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _SYSTEM_LIMITS:
            raise
        raise StateError(f"cannot open {parent}: {err.strerror}") from None
    try:
        return open_private_dir(parent_fd, os.path.basename(path), path)
    finally:
        os.close(parent_fd)


def open_private_dir(dir_fd: int, name: str, shown: str) -> int:
    """mkdir ``name`` (0700) under ``dir_fd`` if needed and open it safely.

    An empty directory may be removed by another seqbox tidying up between our
    mkdir and open: then make it again.
    """
    for _ in range(20):
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
        except OSError as err:
            if err.errno in _SYSTEM_LIMITS:
                raise
            raise StateError(f"cannot create {shown}: {err.strerror}") from None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as err:
            if err.errno in _SYSTEM_LIMITS:
                raise
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _not_a_directory(shown) from None
            raise StateError(f"cannot open {shown}: {err.strerror}") from None
        return _checked(fd, shown)
    raise StateError(f"cannot open {shown}: it keeps disappearing")


def open_existing_dir(dir_fd: int, name: str, shown: str) -> int | None:
    """Open the directory ``name`` under ``dir_fd`` if it exists (None if not),
    never through a symlink."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_directory(shown) from None
        raise


def open_path(
    dir_fd: int, parts: Iterable[str], shown: str, open_one: Opener = open_existing_dir
) -> int | None:
    """The directory ``parts`` (one or more names) below ``dir_fd``, opened one
    component at a time by ``open_one``: :func:`open_existing_dir`, or
    :func:`open_private_dir` to make what is missing. Its fd, or None where a
    component does not exist. ``shown`` names ``dir_fd`` in messages
    (``<state>``); what is opened on the way is closed, ``dir_fd`` is left open."""
    fd = dir_fd
    for part in parts:
        shown = f"{shown}/{part}"
        try:
            nxt = open_one(fd, part, shown)
        finally:
            if fd != dir_fd:
                os.close(fd)
        if nxt is None:
            return None
        fd = nxt
    return fd


def _not_a_directory(shown: str) -> StateError:
    return StateError(
        f"refusing to use {shown}: it is a symlink or not a directory",
        hint="remove it; seqbox will recreate it",
    )


def _checked(fd: int, shown: str) -> int:
    """Refuse a directory owned by someone else; close one that lets others in."""
    info = os.fstat(fd)
    if info.st_uid != os.getuid():
        os.close(fd)
        raise StateError(f"refusing to use {shown}: it belongs to uid {info.st_uid}, not to you")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.fchmod(fd, 0o700)
    return fd


def trees_dir(environ: Mapping[str, str] | None = None) -> str:
    """``<state>/trees``: where poll runs record their trees (made when needed,
    removed when empty)."""
    return os.path.join(state_dir_path(environ), "trees")
