"""The options of ``seqbox run``: one table, used by the command line, the config
file, the environment and the Python API alike (a run's resolved options:
:mod:`seqbox.runoptions`).

Kept free of heavy imports (no argparse, typing, dataclasses): this module is on
the start-up path of every wrapped command.
"""

from __future__ import annotations

from seqbox import units
from seqbox.errors import UsageError

TYPE_CHECKING = False  # typing costs ~9 ms to import; mypy honours this name
if TYPE_CHECKING:
    from collections.abc import Callable

    Parser = Callable[..., object]

BACKEND_NAMES = ("auto", "cgroup2", "cgroup1", "poll")
#: where the documentation lives (``--help`` points here; docs/reference.md lists every option)
DOCS_URL = "https://github.com/seqbox/seqbox/tree/main/docs"
#: ``--slots`` when a budget is given and no count: as many as fit
NO_SLOT_CAP = 1 << 20
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_LOCK_CHARS = _ALNUM | frozenset("._-")


def _lock_name(value: object, what: str) -> str:
    text = str(value)
    if not (0 < len(text) <= 64 and text[0] in _ALNUM and all(c in _LOCK_CHARS for c in text)):
        raise UsageError(f"{what}: expected a lock name of letters, digits, '.', '_' or '-', got {value!r}")
    return text


def _backend(value: object, what: str) -> str:
    text = str(value).strip().lower()
    if text not in BACKEND_NAMES:
        raise UsageError(f"{what}: expected one of {', '.join(BACKEND_NAMES)}, got {value!r}")
    return text


def _bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{what}: expected true or false, got {value!r}")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what}: expected a non-empty string, got {value!r}")
    return value


def _slots(value: str | int, what: str) -> int:
    return units.parse_count(value, what, minimum=1, maximum=1000)


def _count(value: str | int, what: str) -> int:
    return units.parse_count(value, what)


def _budget(value: str | int, what: str) -> int | str | None:
    """``--budget``: a size, or ``auto``; ``0``/``none``: no budget."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return units.parse_size(value, what)
    except UsageError:
        raise UsageError(f"{what}: expected a size like 8G, or auto, got {value!r}") from None


def _poll_interval(value: str | float, what: str) -> float:
    seconds = units.parse_duration(value, what)
    if seconds is None or seconds < 0.01:
        raise UsageError(f"{what}: expected a duration of at least 10ms, got {value!r}")
    return seconds


class Option:
    """One option of ``seqbox run``.

    ``takes`` is the metavar for options with a value, "" for flags.
    ``config`` says whether the key may come from a config file, a profile and a
    ``SEQBOX_<KEY>`` environment variable.
    """

    __slots__ = ("config", "default", "flags", "help", "key", "parse", "takes")

    def __init__(
        self,
        key: str,
        flags: tuple[str, ...],
        takes: str,
        parse: Parser,
        default: object,
        help: str,
        *,
        config: bool = True,
    ) -> None:
        self.key = key
        self.flags = flags
        self.takes = takes
        self.parse = parse
        self.default = default
        self.help = help
        self.config = config


OPTIONS: tuple[Option, ...] = (
    Option(
        "mem",
        ("--mem",),
        "SIZE",
        units.parse_mem_limit,
        "2G",
        "memory limit of the whole tree (512M, 2G, 1.5GiB; 0/none: no limit)",
    ),
    Option(
        "mem_high",
        ("--mem-high",),
        "SIZE",
        units.parse_mem_limit,
        None,
        "soft limit: throttle above it (cgroup2), warn (other backends)",
    ),
    Option(
        "warn_at",
        ("--warn-at",),
        "FRACTION",
        units.parse_fraction,
        "0.8",
        "print one warning when the tree passes this share of --mem",
    ),
    Option(
        "timeout",
        ("--timeout",),
        "DURATION",
        units.parse_duration,
        "30m",
        "stop the command after this long (90, 90s, 5m, 1h30m; 0/none: never)",
    ),
    Option(
        "grace",
        ("--grace",),
        "DURATION",
        units.parse_grace,
        "10s",
        "after the timeout signal, wait this long, then SIGKILL the whole tree",
    ),
    Option(
        "signal",
        ("--signal",),
        "SIG",
        units.parse_signal,
        "TERM",
        "signal sent to the tree on timeout (TERM, INT, 9)",
    ),
    Option(
        "pids",
        ("--pids",),
        "N",
        units.parse_pids,
        None,
        "max processes+threads in the tree (fork-bomb guard)",
    ),
    Option(
        "cpus",
        ("--cpus",),
        "N",
        units.parse_cpus,
        None,
        "CPU quota in cores, e.g. 1.5 (cgroup backends only)",
    ),
    Option(
        "retry",
        ("--retry",),
        "N",
        _count,
        0,
        "run again up to N more times after a non-zero exit or a timeout",
    ),
    Option("retry_on_oom", ("--retry-on-oom",), "", _bool, False, "also retry after a memory kill"),
    Option("lock", ("--lock",), "NAME", _lock_name, "default", "which project queue to wait in"),
    Option("no_lock", ("--no-lock",), "", _bool, False, "do not wait in any queue"),
    Option(
        "slots",
        ("--slots",),
        "N",
        _slots,
        None,
        "let up to N runs hold the same lock at once [default: 1; no cap with --budget]",
    ),
    Option(
        "budget",
        ("--budget",),
        "SIZE",
        _budget,
        None,
        "start runs of this lock only while the sum of their --mem fits in SIZE (or auto)",
    ),
    Option(
        "reserve",
        ("--reserve",),
        "SIZE",
        units.parse_size,
        None,
        "under --budget: what this run reserves (at most --mem) [default: learned, else --mem]",
    ),
    Option(
        "key",
        ("--key",),
        "NAME",
        _text,
        None,
        "which runs share a learned reservation [default: the command line and its directory]",
    ),
    Option(
        "wait_timeout",
        ("--wait-timeout",),
        "DURATION",
        units.parse_duration,
        None,
        "give up waiting for the lock after this long (exit 75)",
    ),
    Option(
        "backend",
        ("--backend",),
        "NAME",
        _backend,
        "auto",
        "enforcement backend: auto, cgroup2, cgroup1 or poll",
    ),
    Option(
        "json",
        ("--json",),
        "",
        _bool,
        False,
        "capture stdout/stderr and print one JSON summary instead",
        config=False,
    ),
    Option(
        "report",
        ("--report",),
        "FILE",
        _text,
        None,
        "write the JSON summary to FILE; output stays live",
        config=False,
    ),
    Option(
        "log",
        ("--log",),
        "FILE",
        _text,
        None,
        "append the command's output and exit status per try to FILE",
        config=False,
    ),
    Option(
        "quiet",
        ("-q", "--quiet"),
        "",
        _bool,
        False,
        "print only seqbox's own errors (the exit status says why the command stopped)",
        config=False,
    ),
    Option("verbose", ("-v", "--verbose"), "", _bool, False, "show what seqbox does", config=False),
    Option("cwd", ("--cwd",), "DIR", _text, None, "working directory of the command", config=False),
    Option("env", ("--env",), "K=V", _text, (), "extra environment variable (repeatable)", config=False),
    Option(
        "profile",
        ("--profile",),
        "NAME",
        _text,
        None,
        "use a profile from the config (default: 'ci' when CI=true)",
        config=False,
    ),
    Option(
        "debug", ("--debug",), "", _bool, False, "show a traceback when seqbox itself fails", config=False
    ),
    # Config-only keys (no command-line flag).
    Option(
        "poll_interval", (), "DURATION", _poll_interval, "0.1s", "how often the poll backend samples the tree"
    ),
    Option("log_dir", (), "DIR", _text, None, "where run logs go"),
    Option("keep_logs", (), "N", _count, 200, "how many run logs to keep"),
    Option("summary", (), "", _bool, True, "append a Markdown block per run to $GITHUB_STEP_SUMMARY"),
)

BY_KEY = {opt.key: opt for opt in OPTIONS}
BY_FLAG = {flag: opt for opt in OPTIONS for flag in opt.flags}
CONFIG_KEYS = frozenset(opt.key for opt in OPTIONS if opt.config)


#: what a value of each metavar looks like, for errors
_EXPECTED = {
    "": "true or false",
    "SIZE": 'a size like "2G" (a string) or a number of bytes',
    "DURATION": 'a duration like "30m" (a string) or a number of seconds',
    "N": "a whole number",
    "FRACTION": "a fraction like 0.5",
    "SIG": 'a signal name like "TERM" or a number',
}


def parse_value(key: str, raw: object, source: str) -> object:
    """Parse one raw value (from the CLI, env or config) for ``key``.

    ``source`` names where it came from, for the error message.
    """
    opt = BY_KEY[key]
    if raw is None:
        return None
    if key == "env":
        if isinstance(raw, str):
            return (raw,)
        return tuple(str(item) for item in raw)  # type: ignore[attr-defined]
    if not isinstance(raw, (str, int, float)):  # bool is an int
        kind = (
            "a table" if isinstance(raw, dict) else "a list" if isinstance(raw, (list, tuple)) else "a value"
        )
        expected = _EXPECTED.get(opt.takes, "a string")
        raise UsageError(f"{source}: expected {expected}, got {kind}")
    return opt.parse(raw, source)


RUN_EXAMPLES = """\
examples:
  seqbox run --mem 2G -- pytest -x
  seqbox run --mem 512M --timeout 5m --pids 256 -- make -j8
  seqbox run --json --mem 256M -- python -c 'print("hi")'
  seqbox run --retry 2 --timeout 90s --report out.json -- ./flaky-test.sh
  seqbox run --lock agents --budget auto --mem 2G -- ./agent.sh
"""


def run_help() -> str:
    """``seqbox run --help``, generated from the table."""
    lines = [
        "usage: seqbox run [OPTIONS] -- CMD [ARGS...]",
        "",
        "Wait for the project's lock, then run CMD with memory, process and time",
        "limits applied to its whole process tree.",
        "",
        "options:",
    ]
    for opt in OPTIONS:
        if not opt.flags:
            continue
        flags = ", ".join(opt.flags) + (f" {opt.takes}" if opt.takes else "")
        default = f" [default: {opt.default}]" if opt.default not in (None, False, (), "") else ""
        lines.append(f"  {flags:<26} {opt.help}{default}")
    lines += [
        "",
        "exit status: the command's own; 124 timeout; 137 memory limit; 128+N signal N;",
        "130/143 seqbox interrupted; 75 lock wait timed out; 125 seqbox failed;",
        "126/127 command not executable / not found.",
        "",
        RUN_EXAMPLES,
        f"docs: {DOCS_URL} (every option, config key and exit code: reference.md)",
        "",
    ]
    return "\n".join(lines)
