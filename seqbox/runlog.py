"""The run log: one JSON Lines file per run, written while it runs.

Events, one object a line, each with ``event`` and ``t`` (epoch seconds):

* ``start``: the command, its working directory, the limits and the backend;
* ``lock``: which lock, how long the run waited, whether it got its turn;
* ``sample``: about every second, the tree's memory (bytes), processes and CPU seconds;
* ``warn``: a warning seqbox printed;
* ``kill``: why seqbox stopped the tree (memory, pids, timeout, interrupt, killed);
* ``error``: seqbox could not do its job (the run ends without an ``exit``);
* ``exit``: the summary, with the same fields as ``--json``.

Writing costs the command nothing at start-up: events are kept in memory
until the command has been launched, then written (and from then on as they
come). A log that cannot be written gives one warning at the end; the run
goes on.

Logs live under the state directory (``logs/<project key>/``) or in the
project's ``log_dir``; the newest ``keep_logs`` runs are kept.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from seqbox.output import Output
    from seqbox.records import LimitsRecord

SUFFIX = ".jsonl"
SAMPLE_EVERY_S = 1.0


def directory(log_dir: str | None, root: str, project_key: str, environ: Mapping[str, str]) -> str:
    """Where the project's run logs go: ``log_dir`` (relative to the project
    root), else ``logs/<project key>`` in the per-user state directory."""
    if log_dir:
        return os.path.join(root, os.path.expanduser(log_dir))
    from seqbox.state import log_dir_default

    return os.path.join(log_dir_default(environ), project_key)


def _open_private(project_key: str, path: str, environ: Mapping[str, str]) -> int:
    """Open ``path``, ``logs/<project key>/<name>`` in the state directory,
    through directory descriptors, never following a symlink (as the queue's files)."""
    from seqbox.state import open_private_dir, open_state_dir

    project_dir = os.path.dirname(path)
    state_fd = open_state_dir(environ)
    try:
        logs_fd = open_private_dir(state_fd, "logs", os.path.dirname(project_dir))
    finally:
        os.close(state_fd)
    try:
        project_fd = open_private_dir(logs_fd, project_key, project_dir)
    finally:
        os.close(logs_fd)
    try:
        return os.open(os.path.basename(path), FILE_FLAGS, 0o600, dir_fd=project_fd)
    finally:
        os.close(project_fd)


FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class RunLog:
    """The log of one run. ``event()`` is cheap; nothing touches the disk
    before :meth:`flush` (called once the command runs)."""

    __slots__ = ("_fd", "_last_sample", "_out", "_pending", "_private", "failed", "path", "problem")

    def __init__(self, path: str, out: Output, private: tuple[str, Mapping[str, str]] | None = None) -> None:
        self.path = path
        #: (project key, environment) when the log lives in the state directory
        self._private = private
        self.failed = False
        self.problem: str | None = None
        self._out = out
        self._fd: int | None = None
        self._pending: list[dict[str, object]] = []
        self._last_sample = -SAMPLE_EVERY_S

    @property
    def written_path(self) -> str | None:
        """The log's path, or None when it could not be written."""
        return None if self.failed else self.path

    def event(self, kind: str, **fields: object) -> None:
        if self.failed:
            return
        record: dict[str, object] = {"event": kind, "t": round(time.time(), 3)}
        record.update(fields)
        if self._fd is None:
            self._pending.append(record)
        else:
            self._write([record])

    def start(
        self,
        *,
        run_id: str,
        command: list[str],
        cwd: str,
        backend: str,
        lock: str | None,
        nested: bool,
        limits: LimitsRecord,
        output_log: str | None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """The first event: what runs, where, how and with which limits
        (``extra``: under a budget, the key and the reservation)."""
        self.event(
            "start",
            run_id=run_id,
            command=command,
            cwd=cwd,
            pid=os.getpid(),
            backend=backend,
            lock=lock,
            nested=nested,
            limits=limits,
            output_log=output_log,
            **(extra or {}),
        )

    def end(self, summary: Mapping[str, object], keep: int) -> None:
        """The last event of a run seqbox finished (its summary); then keep
        the newest ``keep`` logs, and say once if this one could not be written."""
        self.event("exit", summary=dict(summary))
        self._close(keep, quiet=False)

    def end_in_error(self, message: str, exit_code: int | None, status: str, keep: int) -> None:
        """The last event when seqbox could not finish (its own error is then
        the one line to show: no warning about the log)."""
        self.event("error", message=message, exit_code=exit_code, status=status)
        self._close(keep, quiet=True)

    def _close(self, keep: int, quiet: bool) -> None:
        self.flush(quiet=quiet)
        self.close()
        if not quiet:
            self.warn_if_failed()
        if not self.failed:
            prune(os.path.dirname(self.path), keep)

    def sample(self, mem: int, procs: int, cpu_seconds: Callable[[], float | None]) -> None:
        """A sample of the tree, at most one a second (the first at once);
        ``cpu_seconds`` is only asked when the sample is taken."""
        now = time.monotonic()
        if now - self._last_sample < SAMPLE_EVERY_S:
            return
        self._last_sample = now
        cpu = cpu_seconds()
        self.event("sample", mem=mem, procs=procs, cpu_s=None if cpu is None else round(cpu, 3))

    def flush(self, quiet: bool = False) -> None:
        """Open the file (once) and write what is pending. ``quiet``: a log
        that cannot be opened is given up without a warning."""
        if self.failed or (self._fd is not None and not self._pending):
            return
        if self._fd is None:
            from seqbox.errors import StateError

            try:
                if self._private is not None:
                    key, environ = self._private
                    self._fd = _open_private(key, self.path, environ)
                else:
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                    self._fd = os.open(self.path, FILE_FLAGS, 0o644)
            except (OSError, StateError) as err:
                self._fail(err, quiet)
                return
        pending, self._pending = self._pending, []
        self._write(pending)

    def _write(self, records: list[dict[str, object]]) -> None:
        assert self._fd is not None
        data = "".join(json.dumps(r) + "\n" for r in records)
        try:
            os.write(self._fd, data.encode("utf-8", "surrogateescape"))
        except OSError as err:
            self._fail(err)

    def _fail(self, err: Exception, quiet: bool = False) -> None:
        self.failed = True
        self._pending = []
        self.close()
        if quiet:
            return
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        self.problem = (
            f"warning: cannot write the run log {self.path}: {reason}; the command ran "
            "without it (free some space, or set log_dir in the config to a writable directory)"
        )

    def warn_if_failed(self) -> None:
        """Say once, at the end of a run that seqbox finished, that its log
        could not be written (when seqbox itself failed, its error is the one
        line to show: a full state disk breaks both)."""
        if self.problem is not None:
            self._out.note(self.problem)
            self.problem = None

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def prune(log_dir: str, keep: int) -> list[str]:
    """Remove the oldest run logs so that ``keep`` remain; return what went.

    Run ids start with their UTC start time, so names sort by age."""
    try:
        names = sorted(name for name in os.listdir(log_dir) if name.endswith(SUFFIX))
    except OSError:
        return []
    removed = []
    for name in names[: max(0, len(names) - keep)]:
        try:
            os.unlink(os.path.join(log_dir, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def for_run(
    log_dir: str | None,
    keep: int,
    root: str,
    project_key: str,
    run_id: str,
    out: Output,
    environ: Mapping[str, str],
) -> RunLog | None:
    """The run's log (not yet on disk), or None when ``keep_logs`` is 0."""
    if keep <= 0:
        return None
    path = os.path.join(directory(log_dir, root, project_key, environ), run_id + SUFFIX)
    return RunLog(path, out, None if log_dir else (project_key, environ))


def closing_line(summary: Mapping[str, object]) -> str:
    """The one line ``-v`` ends a run with."""
    from seqbox.describe import plural
    from seqbox.units import format_duration, format_size

    peak, limit, wall = summary.get("peak_mem_bytes"), summary.get("mem_limit_bytes"), summary.get("wall_s")
    procs = summary.get("procs_peak")
    text = f"done: {summary.get('status')}, exit {summary.get('exit_code')}"
    if isinstance(wall, (int, float)):
        text += f", {format_duration(wall)}"
    text += f", peak {format_size(peak) if isinstance(peak, int) else '?'}"
    text += f" of {format_size(limit)}" if isinstance(limit, int) else " (no limit)"
    if isinstance(procs, int):
        text += f", {plural(procs, 'process')}"
    text += f", {summary.get('backend')}"
    if summary.get("log"):
        text += f"; details: seqbox report {summary.get('run_id')}"
    return text
