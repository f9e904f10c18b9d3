"""The summary of a run: ``--json``, ``--report``, the run log's last line and
the Python API's result all carry these fields, in this order.

:class:`Summary` is the one list of fields: the JSON object is made from it,
and ``seqbox.Result`` (seqbox/api.py) is derived from it.
"""

from __future__ import annotations

import os


class Summary:
    """How a run ended."""

    command: list[str]
    #: ok | failed | timeout | memory | signal | error
    status: str
    exit_code: int
    #: the signal that ended the command, if one did
    signal: int | None
    wall_s: float
    cpu_s: float | None
    #: from the kernel's own counter on cgroup backends
    peak_mem_bytes: int | None
    mem_limit_bytes: int | None
    procs_peak: int
    backend: str | None
    lock: str | None
    lock_wait_s: float
    attempts: int
    run_id: str
    log: str | None
    #: what the run reserved under a budget (section 3b), else None
    reserved_bytes: int | None
    #: seconds its tree spent frozen for the lock's budget
    frozen_s: float

    __slots__ = tuple(__annotations__)

    def as_json(self) -> dict[str, object]:
        """The JSON object, fields in order (every one must have been set)."""
        return {name: getattr(self, name) for name in FIELDS}


#: the summary's fields, in order
FIELDS: tuple[str, ...] = Summary.__slots__


def dumps(document: dict[str, object]) -> str:
    """One line of JSON that stays valid whatever the command's arguments hold
    (text that is not UTF-8 arrives as surrogate escapes: they become U+FFFD)."""
    import json

    text = json.dumps(document, ensure_ascii=False)
    if any("\udc80" <= char <= "\udcff" for char in text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def check_report_path(path: str) -> None:
    """Refuse, before anything runs, a report that could not be written."""
    from seqbox.errors import UsageError

    if os.path.isdir(path):
        raise UsageError(f"--report: {path} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--report: no such directory {directory}")
    if not os.access(directory, os.W_OK) and not os.access(path, os.W_OK):
        raise UsageError(f"--report: cannot write in {directory} (permission denied)")


def write_report(path: str, document: dict[str, object]) -> None:
    """Write the summary to ``path`` atomically (a reader never sees half of it)."""
    from seqbox.errors import SeqboxError

    text = dumps(document) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        if path.startswith("/dev/") or path.startswith("/proc/"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SeqboxError(f"cannot write the report {path}: {err.strerror}") from None
