"""Reading run logs back: the list of recent runs, one run in full, and
finding a run by what the user typed (``seqbox logs``, ``seqbox report``)."""

from __future__ import annotations

import json
import os

from seqbox.backends import procinfo
from seqbox.config import resolve
from seqbox.errors import UsageError
from seqbox.project import project_key, project_root
from seqbox.runlog import SUFFIX, directory
from seqbox.schema import EVENT, check

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from seqbox.records import RunEvent, SummaryRecord


class RunRecord:
    """What a run log says about one run."""

    __slots__ = ("error", "errors", "events", "kills", "path", "samples", "start", "summary", "warnings")

    def __init__(self, path: str, events: list[RunEvent]) -> None:
        self.path = path
        self.events = events
        none: RunEvent = {"event": "start"}
        self.start = next((e for e in events if e["event"] == "start"), none)
        exits = [e for e in events if e["event"] == "exit"]
        self.summary: SummaryRecord | None = exits[-1].get("summary") if exits else None
        self.errors = [e for e in events if e["event"] == "error"]
        self.error: str | None = str(self.errors[-1].get("message")) if self.errors else None
        self.samples = [e for e in events if e["event"] == "sample"]
        self.kills = [e for e in events if e["event"] == "kill"]
        self.warnings = [str(e.get("message")) for e in events if e["event"] == "warn"]

    @property
    def run_id(self) -> str:
        return os.path.basename(self.path)[: -len(SUFFIX)]

    @property
    def command(self) -> list[str]:
        return self.start.get("command") or (self.summary or {}).get("command") or []

    @property
    def started_at(self) -> float | None:
        return self.start.get("t", self.events[0].get("t") if self.events else None)

    @property
    def running(self) -> bool:
        """No ``exit`` or ``error`` yet, and its seqbox is still alive."""
        if self.summary is not None or self.error is not None:
            return False
        pid = self.start.get("pid")
        return pid is not None and procinfo.is_alive(pid, None)

    @property
    def status(self) -> str:
        if self.summary is not None:
            return str(self.summary.get("status"))
        if self.errors:
            return self.errors[-1].get("status") or "error"
        return "running" if self.running else "crashed"

    @property
    def exit_code(self) -> int | None:
        if self.summary is not None:
            return self.summary.get("exit_code")
        return self.errors[-1].get("exit_code") if self.errors else None

    @property
    def peak_mem(self) -> int | None:
        peak = (self.summary or {}).get("peak_mem_bytes")
        if peak is not None:
            return peak
        mems = self.mem_samples()
        return max(mems) if mems else None

    def mem_samples(self) -> list[int]:
        return [mem for s in self.samples if (mem := s.get("mem")) is not None]

    @property
    def mem_limit(self) -> int | None:
        if self.summary is not None:
            return self.summary.get("mem_limit_bytes")
        return self.start.get("limits", {}).get("mem")

    @property
    def duration(self) -> float | None:
        """Wall time of the command (so far, when it runs)."""
        wall = (self.summary or {}).get("wall_s")
        if wall is not None:
            return wall
        times = [t for e in self.events if (t := e.get("t")) is not None]
        return times[-1] - times[0] if len(times) > 1 else None

    @property
    def backend(self) -> str | None:
        return self.start.get("backend")


def parse(text: str) -> list[RunEvent]:
    """The events of a log's text; a torn or foreign line is skipped."""
    events = []
    for line in text.splitlines():
        try:
            event = event_from_json(json.loads(line))
        except ValueError:
            continue
        if event is not None:
            events.append(event)
    return events


def event_from_json(data: object) -> RunEvent | None:
    """A run log line as read: a dict with a string ``event``, each known key
    of its kind (see :data:`seqbox.schema.EVENT`); None when it is not an event."""
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    return check(data, EVENT)  # type: ignore[return-value]  # checked key by key


def load(path: str) -> RunRecord:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return RunRecord(path, parse(f.read()))
    except OSError as err:
        raise UsageError(f"cannot read the run log {path}: {err.strerror}") from None


def log_directory(cwd: str, environ: Mapping[str, str]) -> str:
    """The run log directory of the project ``cwd`` is in (its config's ``log_dir``)."""
    root = project_root(cwd, environ)
    options = resolve({}, root, environ)
    return directory(options.log_dir, root, project_key(root), environ)


def log_paths(log_dir: str) -> list[str]:
    """The run logs in ``log_dir``, newest first."""
    try:
        names = [name for name in os.listdir(log_dir) if name.endswith(SUFFIX)]
    except FileNotFoundError:
        return []
    except OSError as err:
        raise UsageError(f"cannot list the run logs in {log_dir}: {err.strerror}") from None
    return [os.path.join(log_dir, name) for name in sorted(names, reverse=True)]


def recent(log_dir: str, limit: int | None = None) -> Iterator[RunRecord]:
    """The newest runs first (``limit`` of them)."""
    for path in log_paths(log_dir)[:limit]:
        try:
            yield load(path)
        except UsageError:  # pruned while we looked
            continue


def find(log_dir: str, ref: str | None) -> str:
    """The log of the run ``ref`` names: a number N (the Nth newest, 1 the
    newest, as ``seqbox logs`` numbers them), a run id or a unique part of
    one, or a path to a log file. None: the newest run."""
    if ref is not None and os.sep in ref and os.path.isfile(ref):
        return ref
    paths = log_paths(log_dir)
    if not paths:
        raise UsageError(f"no run logs in {log_dir} yet (run a command with 'seqbox run' first)")
    if ref is None:
        return paths[0]
    if ref.isdigit() and len(ref) < 6:
        index = int(ref)
        if not 1 <= index <= len(paths):
            raise UsageError(f"there are {len(paths)} runs, no run number {index} (see 'seqbox logs')")
        return paths[index - 1]
    matches = [p for p in paths if ref in os.path.basename(p)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run matches {ref!r} (see 'seqbox logs' for the run ids)")
    raise UsageError(f"{len(matches)} runs match {ref!r}; give more of the run id (see 'seqbox logs')")


def current(log_dir: str) -> str | None:
    """The log of the newest run that is still running, if any."""
    for path in log_paths(log_dir)[:20]:
        if load(path).running:
            return path
    return None
