"""The CI job summary: a short Markdown block per top-level run.

When ``GITHUB_STEP_SUMMARY`` names a writable file, each top-level ``seqbox
run`` appends :func:`block` to it (config ``summary = false`` turns it off);
``seqbox report --markdown RUN`` prints the same block for other CI systems.
Made from the run's summary and its log's memory samples: no terminal
library is loaded.
"""

from __future__ import annotations

import os

from seqbox import history
from seqbox.culprit import from_json
from seqbox.describe import command_line
from seqbox.errors import SeqboxError, UsageError
from seqbox.units import format_duration, format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from seqbox.history import RunRecord
    from seqbox.output import Output

BLOCKS = "▁▂▃▄▅▆▇█"
#: characters of the memory-over-time sparkline
SPARK_WIDTH = 24
#: the longest command the block shows whole
COMMAND_WIDTH = 200
MARK = {"ok": "✅", "failed": "❌", "timeout": "⏱️", "memory": "💥", "signal": "⚠️", "error": "❌"}


def sparkline(values: Sequence[int], top: int | None = None, width: int = SPARK_WIDTH) -> str:
    """``values`` in at most ``width`` block characters (each the highest value
    it covers), a full block at ``top`` (else at the highest value)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [
            max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)
        ]
    scale = top or max(values)
    if scale <= 0:
        return BLOCKS[0] * len(values)
    last = len(BLOCKS) - 1
    return "".join(BLOCKS[min(last, max(0, round(v / scale * last)))] for v in values)


def _code(text: str) -> str:
    """``text`` as inline code that stays one table cell (no backtick, no pipe breaks it)."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def block(summary: Mapping[str, object], samples: Sequence[int] = ()) -> str:
    """The Markdown block of one run: ``summary`` is its section 4 summary,
    ``samples`` its memory over time (bytes, in order)."""
    command = command_line(summary.get("command"))
    if len(command) > COMMAND_WIDTH:
        command = command[: COMMAND_WIDTH - 3] + "..."
    status = str(summary.get("status"))
    code = summary.get("exit_code")
    peak, limit = _int(summary.get("peak_mem_bytes")), _int(summary.get("mem_limit_bytes"))
    memory = "-" if peak is None else format_size(peak)
    if limit:
        memory += f" of {format_size(limit)}"
        if peak is not None:
            memory += f" ({100 * peak / limit:.0f}%)"
    spark = sparkline(list(samples), limit)
    if spark:
        memory += f" {spark}"
    wall, waited = _float(summary.get("wall_s")), _float(summary.get("lock_wait_s"))
    lines = [
        f"#### seqbox: {_code(command)}",
        "",
        "| status | peak of limit | duration | lock wait |",
        "|---|---|---|---|",
        f"| {MARK.get(status, '')} {status} (exit {code}) | {memory} "
        f"| {'-' if wall is None else format_duration(wall)} "
        f"| {'-' if waited is None else format_duration(waited)} |",
    ]
    culprit = from_json(summary.get("culprit"))
    if culprit:
        named = "; ".join(
            f"pid {entry['pid']} {_code(entry['command'])} {format_size(entry['rss_bytes'])}"
            for entry in culprit
        )
        lines += ["", f"Biggest processes: {named}"]
    return "\n".join(lines) + "\n\n"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def of_record(record: RunRecord) -> str:
    """The block of a run read back from its log (``seqbox report --markdown``)."""
    if record.summary is None:
        raise UsageError(f"run {record.run_id} has no summary yet ({record.status})")
    return block(dict(record.summary), record.mem_samples())


def append(path: str, summary: Mapping[str, object], out: Output) -> None:
    """Append the run's block to the job summary file ``path``, when it is a
    writable file (else say so with -v, and leave it)."""
    samples: list[int] = []
    log = summary.get("log")
    if isinstance(log, str):
        try:
            samples = history.load(log).mem_samples()
        except SeqboxError:
            pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        out.info(f"no job summary: cannot open GITHUB_STEP_SUMMARY {path} ({err.strerror})")
        return
    try:
        os.write(fd, block(summary, samples).encode("utf-8", "replace"))
    except OSError as err:
        out.info(f"no job summary: cannot write {path} ({err.strerror})")
    finally:
        os.close(fd)
