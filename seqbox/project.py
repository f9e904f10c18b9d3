"""Which project a directory belongs to, and where its git directory is."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: what a project key's name keeps of the directory's name (a run of anything else is one "_")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


#: files that mark a project's root outside git
MARKERS = ("pyproject.toml", "seqbox.toml")


def project_root(cwd: str, environ: Mapping[str, str] | None = None) -> str:
    """The project ``cwd`` belongs to: the git top level (every worktree of a
    repository is that repository's project: they share its queue); outside
    git, the nearest ancestor holding a ``pyproject.toml`` or ``seqbox.toml``;
    else ``cwd`` itself. ``SEQBOX_PROJECT`` overrides.

    So a run started in a subfolder waits in the same queue as one started
    at the root.
    """
    env = os.environ if environ is None else environ
    override = env.get("SEQBOX_PROJECT")
    if override:
        return os.path.realpath(override)
    start = os.path.realpath(cwd)
    marked: str | None = None
    path = start
    while True:
        dotgit = os.path.join(path, ".git")
        if os.path.lexists(dotgit):
            return _main_worktree(dotgit, path) if os.path.isfile(dotgit) else path
        if marked is None and any(os.path.lexists(os.path.join(path, name)) for name in MARKERS):
            marked = path
        parent = os.path.dirname(path)
        if parent == path:
            return marked or start
        path = parent


def _main_worktree(dotgit: str, worktree: str) -> str:
    """The main worktree of a linked worktree (``git worktree add``), whose
    ``.git`` file names a directory under the repository's own git directory
    with a ``commondir`` file; else (a submodule) ``worktree`` itself."""
    gitdir = _gitdir_from_file(dotgit, worktree)
    if gitdir is None:
        return worktree
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as f:
            common = os.path.realpath(os.path.join(gitdir, f.readline().strip()))
    except OSError:
        return worktree
    # a non-bare repository's git directory is <main worktree>/.git; a bare one is its own root
    return os.path.dirname(common) if os.path.basename(common) == ".git" else common


def fnv1a64(data: bytes) -> int:
    """The 64-bit FNV-1a hash (a published standard: tests/queue/test_project.py
    checks its test vectors). It names every project's state on disk, so it
    stays: hashlib would cost each run ~4 ms of imports, and zlib's crc32 is
    cheap but 32 bits and a different value (the queue of a project would
    split between seqbox versions)."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def project_key(root: str) -> str:
    """A short, stable, filesystem-safe name for a project root: the
    directory's name, and a hash of the full path that tells apart projects
    with the same name."""
    name = _safe_name(os.path.basename(root) or "root")[:32]
    return f"{name}-{fnv1a64(root.encode('utf-8', 'surrogateescape')):016x}"


def _safe_name(text: str) -> str:
    out: list[str] = []
    unsafe_run = False
    for c in text:
        if c in _SAFE:
            out.append(c)
        elif not unsafe_run:  # a run of unsafe characters is one "_"
            out.append("_")
        unsafe_run = c not in _SAFE
    return "".join(out)


def git_dir(cwd: str) -> str | None:
    """The git directory of the repository ``cwd`` is in (for ``index.lock``)."""
    path = os.path.realpath(cwd)
    while True:
        dotgit = os.path.join(path, ".git")
        if os.path.isdir(dotgit):
            return dotgit
        if os.path.isfile(dotgit):
            return _gitdir_from_file(dotgit, path)
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _gitdir_from_file(dotgit: str, worktree: str) -> str | None:
    try:
        with open(dotgit, encoding="utf-8") as f:
            line = f.readline().strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    target = line[len("gitdir:") :].strip()
    return os.path.normpath(os.path.join(worktree, target))
