"""What ``seqbox logs``, ``seqbox report`` and ``seqbox monitor`` draw, as rich
renderables (pure: data in, renderable out; the commands print them)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from seqbox.culprit import UNSEEN, from_json, phrase
from seqbox.describe import command_line, describe_command, plural, where
from seqbox.units import format_duration, format_size

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import RenderableType

    from seqbox.history import RunRecord
    from seqbox.records import RunEvent, Status

BLOCKS = "▁▂▃▄▅▆▇█"
#: the most of a command the runs table shows on a terminal (a narrow one cuts it further)
LOGS_COMMAND_WIDTH = 60
#: the width text for a pipe or a file is laid out in (nothing is cut to a terminal's)
PLAIN_WIDTH = 4096
STATUS_STYLE = {
    "ok": "green",
    "failed": "red",
    "timeout": "yellow",
    "memory": "bold red",
    "signal": "magenta",
    "error": "red",
    "running": "cyan",
    "crashed": "bold red",
    "cancelled": "yellow",
}


def size(value: int | None) -> str:
    return "-" if value is None else format_size(value)


def duration(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def clock(epoch: float | None, with_date: bool = True) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(epoch))


def sparkline(values: Sequence[int], width: int, top: int | None = None) -> str:
    """``values`` squeezed into ``width`` block characters (each the highest
    value it covers), scaled so that ``top`` (else the highest) is a full block."""
    if not values or width <= 0:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [
            max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)
        ]
    scale = top if top else max(values)
    if scale <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, max(0, round(v / scale * (len(BLOCKS) - 1))))] for v in values)


def bar(value: int | None, limit: int | None, width: int = 30) -> Text:
    """``[██████░░░░] 63.2 MiB of 100.0 MiB (63%)``; without a limit, the value only."""
    if value is None:
        return Text("memory unknown", style="dim")
    if not limit:
        return Text(f"{format_size(value)} (no limit)")
    share = value / limit
    filled = min(width, round(share * width))
    style = "red" if share >= 0.9 else "yellow" if share >= 0.5 else "green"
    text = Text("[")
    text.append("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f"] {format_size(value)} of {format_size(limit)} ({100 * share:.0f}%)")
    return text


def status_text(status: str, exit_code: int | None = None) -> Text:
    label = status if exit_code is None or status == "running" else f"{status} ({exit_code})"
    return Text(label, style=STATUS_STYLE.get(status, ""))


def plain(renderable: RenderableType) -> str:
    """A renderable as text for a pipe or a file: nothing cut or wrapped to a
    terminal's width, no styles, no trailing spaces."""
    console = Console(width=PLAIN_WIDTH, color_system=None, highlight=False, markup=False, soft_wrap=True)
    with console.capture() as captured:
        console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in captured.get().splitlines())


# -- seqbox logs --------------------------------------------------------------------------


def command_started(record: RunRecord) -> float | None:
    """When the command started: when its run got the lock (else when seqbox started)."""
    for event in record.events:
        if event["event"] == "lock" and event.get("got") and event.get("t") is not None:
            return event.get("t")
    return record.started_at


def lock_wait(record: RunRecord) -> float | None:
    """How long the run waited for the lock (and for memory under --budget)."""
    waited = (record.summary or {}).get("lock_wait_s")
    if waited is not None:
        return waited
    return next((e.get("waited_s") for e in record.events if e["event"] == "lock"), None)


def run_dir(record: RunRecord, root: str) -> str:
    """Where the run's command ran, relative to the project (``.``: its root)."""
    return where(record.start.get("cwd"), root) or "-"


def runs_table(records: Sequence[RunRecord], root: str, fit: bool = True) -> Table:
    """The recent runs, one a line. ``fit``: as wide as the terminal (the command
    gives way); else (a pipe, a file) every command whole."""
    headers = ("#", "started", "waited", "where", "command", "status", "peak", "limit", "duration")
    today = time.strftime("%Y-%m-%d")
    rows = []
    for number, record in enumerate(records, 1):
        waited = lock_wait(record)
        rows.append(
            [
                str(number),
                clock(command_started(record)).removeprefix(today + " "),
                "-" if waited is None or waited < 0.05 else duration(waited),
                run_dir(record, root),
                describe_command(record.command, LOGS_COMMAND_WIDTH if fit else None),
                record.status if record.exit_code is None else f"{record.status} ({record.exit_code})",
                size(record.peak_mem),
                size(record.mem_limit),
                duration(record.duration),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    table = Table(box=None, pad_edge=False, header_style="bold", expand=fit)
    for i, header in enumerate(headers):
        if header == "command" and fit:  # takes what is left, cut with an ellipsis
            table.add_column(header, no_wrap=True, overflow="ellipsis", ratio=1, min_width=10)
        else:
            justify = "right" if i in (0, 2, 6, 7, 8) else "left"
            table.add_column(header, justify=justify, no_wrap=True, width=widths[i])  # type: ignore[arg-type]
    for row, record in zip(rows, records, strict=True):
        status = Text(row[5], style=STATUS_STYLE.get(record.status, ""))
        table.add_row(*row[:5], status, *row[6:])
    return table


def event_line(event: RunEvent) -> str:
    """One log event as a line a person reads."""
    kind = event["event"]
    t = event.get("t")
    when = "--:--:--" if t is None else clock(t, with_date=False)
    if kind == "start":
        limits = event.get("limits", {})
        mem, timeout = limits.get("mem"), limits.get("timeout")
        detail = (
            f"{command_line(event.get('command'))} (backend {event.get('backend')}, "
            f"mem {'no limit' if mem is None else size(mem)}, "
            f"timeout {'none' if timeout is None else duration(timeout)})"
        )
    elif kind == "lock":
        waited = event.get("waited_s")
        wait = "?" if waited is None else duration(waited)
        lock = event.get("lock")
        what = "no lock" if lock is None else f'lock "{lock}"'
        if event.get("nested"):
            what += " (nested: inside the running holder)"
        detail = f"{what}: {'got it' if event.get('got') else 'gave up'} after {wait}"
    elif kind == "sample":
        mem, procs, cpu = event.get("mem"), event.get("procs"), event.get("cpu_s")
        detail = f"{'?' if mem is None else size(mem)}, "
        detail += "?" if procs is None else plural(procs, "process")
        if cpu is not None:
            detail += f", cpu {cpu:.2f}s"
    elif kind in ("freeze", "thaw"):  # section 3b
        detail = str(event.get("message") or f"thawed after {event.get('frozen_s')}s frozen")
    elif kind in ("warn", "kill", "error"):
        detail = str(event.get("message"))
        if kind == "kill":
            detail = f"{event.get('reason')}: {detail}"
    elif kind == "exit":
        summary = event.get("summary", {})
        detail = (
            f"{summary.get('status')}, exit {summary.get('exit_code')}, "
            f"peak {size(summary.get('peak_mem_bytes'))}, {duration(summary.get('wall_s'))}"
        )

        biggest = from_json(summary.get("culprit"))
        if biggest:
            detail += "; biggest: " + ", ".join(phrase(entry) for entry in biggest)
    else:
        detail = ""
    return f"{when}  {kind:<6}  {detail}".rstrip()


# -- seqbox report ------------------------------------------------------------------------


def report(record: RunRecord, width: int = 60, root: str | None = None) -> RenderableType:
    """A run's summary, with memory over time against its limit and the kill marked."""
    summary = record.summary or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")  # a long path wraps, never cut: it is there to be copied
    grid.add_row("run", record.run_id)
    grid.add_row("command", command_line(record.command))
    if root is not None:
        grid.add_row("where", run_dir(record, root))
    grid.add_row("status", status_text(record.status, record.exit_code))
    started, invoked = command_started(record), record.started_at
    shown = clock(started)
    before = "" if invoked is None or clock(invoked) == shown else f" (seqbox started {clock(invoked)})"
    grid.add_row("started", shown + before)
    wall, cpu = record.duration, summary.get("cpu_s")
    timing = f"wall {duration(wall)}"
    if cpu is not None:
        timing += f", cpu {cpu:.2f}s"
    grid.add_row("time", timing if wall is not None else "-")
    limit = record.mem_limit
    grid.add_row(
        "memory", f"peak {size(record.peak_mem)}, " + (f"limit {size(limit)}" if limit else "no limit")
    )
    procs = summary.get("procs_peak")
    if procs is not None:
        grid.add_row("processes", f"peak {procs}")
    lock = summary.get("lock", record.start.get("lock"))
    waited = summary.get("lock_wait_s")
    grid.add_row(
        "lock",
        "none" if lock is None else f'"{lock}"' + ("" if waited is None else f", waited {duration(waited)}"),
    )
    grid.add_row("backend", record.backend or "-")
    for kill in record.kills:
        grid.add_row(
            Text("killed", style="bold red"),
            Text(f"{kill.get('reason')}: {kill.get('message')}", style="red"),
        )
    for warning in record.warnings:
        grid.add_row(Text("warned", style="yellow"), warning)

    biggest = from_json(summary.get("culprit"))
    for n, entry in enumerate(biggest):
        grid.add_row("biggest" if n == 0 else "", phrase(entry))
    if not biggest and record.status == "memory":
        grid.add_row("biggest", Text(f"not seen: {UNSEEN}", style="dim"))
    if record.error:
        grid.add_row(Text("error", style="red"), record.error)
    grid.add_row("log", record.path)
    return Group(grid, Text(""), memory_chart(record, width))


def timeline(points: Sequence[tuple[float, int]], width: int, t0: float, t1: float) -> list[int]:
    """Memory per column of a chart ``width`` wide spanning ``t0``..``t1``: each
    column holds the highest sample taken in its time slice, else the one
    before it (0 before the first)."""
    span = max(t1 - t0, 1e-9)
    columns: list[int | None] = [None] * width
    for t, mem in points:
        col = min(width - 1, max(0, int((t - t0) / span * width)))
        current = columns[col]
        columns[col] = mem if current is None else max(current, mem)
    out, last = [], 0
    for value in columns:
        last = last if value is None else value
        out.append(last)
    return out


def _run_span(record: RunRecord) -> tuple[float, float] | None:
    """From when the command got its turn to the run's last event."""
    times = [t for e in record.events if (t := e.get("t")) is not None]
    if not times:
        return None
    got = [
        t for e in record.events if e["event"] == "lock" and e.get("got") and (t := e.get("t")) is not None
    ]
    t0 = got[0] if got else times[0]
    return t0, max(times[-1], t0)


def memory_chart(record: RunRecord, width: int) -> RenderableType:
    """Memory over time as a sparkline scaled to the limit, the limit drawn as
    a line above it and the kill marked where it happened."""
    points = sorted(
        (t, mem)
        for e in [*record.samples, *record.kills]
        if (t := e.get("t")) is not None and (mem := e.get("mem")) is not None
    )
    span = _run_span(record)
    limit = record.mem_limit
    if not points or span is None:
        return Text("memory over time: no samples (the command ended before the first one)", style="dim")
    t0, t1 = span
    top = limit or max(mem for _, mem in points) or 1
    spark = sparkline(timeline(points, width, t0, t1), width, top)
    label_width = max(len(size(top)), 9)
    chart = Text()
    chart.append("memory over time\n", style="bold")
    if limit:
        chart.append(f"{size(limit):>{label_width}} ┤", style="red")
        chart.append("┄" * width + " limit\n", style="red")
    else:
        chart.append(f"{size(top):>{label_width}} ┤" + " " * width + " (no limit: scaled to the peak)\n")
    chart.append(f"{'':>{label_width}} │")
    chart.append(spark, style="cyan")
    if record.kills:
        chart.append("✗", style="bold red")
        chart.append(f" killed: {record.kills[0].get('reason')}", style="red")
    chart.append("\n")
    end = duration(t1 - t0)
    chart.append(f"{'0':>{label_width}} └0s{end:>{width - 2}}")
    return chart


# -- seqbox monitor -----------------------------------------------------------------------


def monitor_screen(
    data: Status, history: dict[str, list[int]], width: int = 40, live: bool = True
) -> RenderableType:
    """The monitor's screen: per lock, the running command with its memory bar
    and sparkline, and the queue. ``live``: the full-screen view (q quits);
    else one frame, commands whole."""
    root = data["project"]
    command_width = 60 if live else None
    header = Text()
    header.append("seqbox monitor", style="bold")
    quits = "  (q quits)" if live else ""
    header.append(f"  {root}  {clock(time.time(), with_date=False)}{quits}", style="dim")
    parts: list[RenderableType] = [header, Text("")]
    for orphan in data["orphaned"]:
        count = plural(orphan["processes"], "process")
        first = describe_command(orphan["commands"][0] if orphan["commands"] else "?", command_width)
        parts.append(
            Text(
                f'orphaned: {count} left running by a crashed run, first "{first}"; '
                "end them with 'seqbox clean'",
                style="bold red",
            )
        )
    if not data["locks"] and not data["orphaned"]:
        parts.append(Text(f"nothing running or waiting in {root}"))
        return Group(*parts)
    for lock in data["locks"]:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True, min_width=len("processes"))  # labels never shrink
        grid.add_column(no_wrap=True, overflow="ellipsis" if live else "fold", ratio=1)
        title = Text(f'lock "{lock["lock"]}"', style="bold underline")
        if lock["budget_bytes"] is not None:
            used = size(lock["reserved_bytes"])
            title.append(f"  budget {size(lock['budget_bytes'])}, {used} reserved", style="bold")
        parts.append(title)
        for run in lock["running"]:
            limit = run["mem_limit_bytes"]
            reserved = run["reservation_bytes"]
            reserves = "" if reserved is None else f", reserves {size(reserved)}"
            how = run.get("reservation_how")  # under a budget: why, and frozen (section 3b)
            reserves += f" ({'--mem' if how == 'mem' else how})" if reserved is not None and how else ""
            reserves += ", frozen (budget)" if run.get("frozen") else ""
            grid.add_row(
                "running",
                f"pid {run['pid']}, for {duration(run['elapsed_s'])}, {run['backend']}{reserves}: "
                f'"{describe_command(run["command"], command_width)}"{_in(run["cwd"])}',
            )
            grid.add_row("memory", bar(run["mem_bytes"], limit))
            spark = sparkline(history.get(str(run["run_id"]), []), width, limit)
            grid.add_row("history", Text(spark or "-", style="cyan"))
            grid.add_row("processes", "?" if run["procs"] is None else str(run["procs"]))
        if not lock["running"]:
            grid.add_row("running", "nothing (the next waiter starts now)")
        for waiter in lock["waiting"]:
            why = f" ({waiter['waiting_for']})" if waiter["waiting_for"] else ""
            grid.add_row(
                "waiting" if waiter["position"] == 1 else "",
                f"{waiter['position']}. pid {waiter['pid']}, for {duration(waiter['waiting_s'])}: "
                f'"{describe_command(waiter["command"], command_width)}"{_in(waiter["cwd"])}{why}',
            )
        if not lock["waiting"]:
            grid.add_row("waiting", "nobody")
        parts += [grid, Text("")]
    return Group(*parts)


def _in(cwd: str | None) -> str:
    """`` in DIR``: where a run's command runs, relative to the project."""
    return f" in {cwd}" if cwd else ""
