"""The field table of every record seqbox writes and reads back, and the one
validator for them.

Each record (a queue entry, a run log event with its limits and summary, the
summary) is a table of ``key: kind``; its typed form is a TypedDict or class
in :mod:`seqbox.records` / :mod:`seqbox.summary`, and ``tests/project/test_schema.py``
holds the two to the same keys and types. What another process wrote is
checked once, by :func:`check`, where it is read (the queue's files, a run
log): a key of the wrong type is dropped, so readers need not look again.

Kinds: ``int``, ``float`` (an int is taken too), ``str``, ``bool``,
``words`` (a list of strings), ``objects`` (a list of JSON objects), or
another :class:`Table` (a nested object, checked by its own table).

On ``seqbox run``'s start-up path: plain Python only.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


class Table:
    """One record's fields: their kinds, which may be null, and whether keys
    outside the table are kept (a run log's are: ``logs --json`` shows them)."""

    __slots__ = ("derived", "fields", "keep_unknown", "name", "nullable")

    def __init__(
        self,
        name: str,
        fields: Mapping[str, str | Table],
        *,
        nullable: frozenset[str] | None = None,
        not_null: frozenset[str] = frozenset(),
        keep_unknown: bool = False,
        derived: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.fields = dict(fields)
        #: keys that may be null (by default every key but those ``not_null``)
        self.nullable = (frozenset(fields) - not_null) if nullable is None else nullable
        self.keep_unknown = keep_unknown
        #: keys of the typed form that are never read from the file (worked out by the reader)
        self.derived = derived


def check(data: Mapping[str, object], table: Table) -> dict[str, object]:
    """``data`` with each key of ``table`` kept only when its value is of its
    kind (or null where that may be); other keys kept or dropped by the table."""
    checked: dict[str, object] = {}
    for key, value in data.items():
        kind = table.fields.get(key)
        if kind is None or key in table.derived:
            if table.keep_unknown and kind is None:
                checked[key] = value
            continue
        if value is None:
            if key in table.nullable:
                checked[key] = None
        elif isinstance(kind, Table):
            if isinstance(value, dict):
                checked[key] = check(value, kind)
        elif is_kind(value, kind):
            checked[key] = value
    return checked


def is_kind(value: object, kind: str) -> bool:
    """Whether a JSON value is of ``kind`` (a bool is no number)."""
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "float":
        return isinstance(value, (int, float))
    if kind == "words":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "objects":
        return isinstance(value, list) and all(isinstance(item, dict) for item in value)
    if kind == "int":
        return isinstance(value, int)
    if kind == "str":
        return isinstance(value, str)
    raise ValueError(f"unknown kind {kind!r}")


#: a place in a lock's queue (:class:`seqbox.records.Entry`): a ticket, or a slot
ENTRY = Table(
    "entry",
    {
        "pid": "int",
        "start": "float",
        "command": "words",
        "cwd": "str",
        "run_id": "str",
        "lock": "str",
        "mem": "int",
        "pids": "int",
        "warn_at": "float",
        "arrived": "float",
        "number": "int",
        "since": "float",
        "backend": "str",
        "cgroups": "words",
        "mem_file": "str",
        "procs_file": "str",
        "tree": "str",
        "ended": "bool",
        "reservation": "int",
        "budget": "int",
        "reserved_how": "str",
        "waiting_for": "str",
    },
    nullable=frozenset({"start", "mem", "pids", "warn_at"}),
    derived=frozenset({"ended"}),  # the mark after the JSON line, not a key in it
)

#: the limits a run log's ``start`` event records (:class:`seqbox.records.LimitsRecord`)
LIMITS = Table(
    "limits",
    {
        "mem": "int",
        "mem_high": "int",
        "warn_at": "float",
        "pids": "int",
        "cpus": "float",
        "timeout": "float",
        "grace": "float",
        "signal": "int",
        "retry": "int",
    },
    keep_unknown=True,
)

#: the summary of a run, in order (:class:`seqbox.summary.Summary`): ``--json``,
#: ``--report``, the run log's ``exit`` event, the API's result
SUMMARY = Table(
    "summary",
    {
        "command": "words",
        "status": "str",
        "exit_code": "int",
        "signal": "int",
        "wall_s": "float",
        "cpu_s": "float",
        "peak_mem_bytes": "int",
        "mem_limit_bytes": "int",
        "procs_peak": "int",
        "backend": "str",
        "lock": "str",
        "lock_wait_s": "float",
        "attempts": "int",
        "run_id": "str",
        "log": "str",
        "reserved_bytes": "int",
        "frozen_s": "float",
        "culprit": "objects",
    },
    keep_unknown=True,
)

#: one line of a run log, as read back (:class:`seqbox.records.RunEvent`)
EVENT = Table(
    "event",
    {
        "event": "str",
        "t": "float",
        "run_id": "str",
        "command": "words",
        "cwd": "str",
        "pid": "int",
        "backend": "str",
        "lock": "str",
        "nested": "bool",
        "limits": LIMITS,
        "output_log": "str",
        "key": "str",
        "reserved": "int",
        "reserved_how": "str",
        "budget": "int",
        "waited_s": "float",
        "got": "bool",
        "mem": "int",
        "procs": "int",
        "cpu_s": "float",
        "message": "str",
        "reason": "str",
        "total": "int",
        "frozen_s": "float",
        "summary": SUMMARY,
        "exit_code": "int",
        "status": "str",
    },
    not_null=frozenset({"event", "t", "limits", "summary"}),
    keep_unknown=True,
)
