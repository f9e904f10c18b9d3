"""Each record's field table (seqbox/schema.py) agrees with its typed form,
and the one validator keeps what is of its kind and drops the rest."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from seqbox import records, schema
from seqbox.api import Result
from seqbox.summary import FIELDS, Summary

#: the Python type each kind stands for
KINDS: dict[str, object] = {"int": int, "float": float, "str": str, "bool": bool, "words": list[str]}
TYPED = {"entry": records.Entry, "event": records.RunEvent, "limits": records.LimitsRecord}
LOCAL = {"Culprit": records.Culprit}


def _hints(typed: object) -> dict[str, object]:
    return typing.get_type_hints(typed, localns=LOCAL)


def _split(hint: object) -> tuple[object, bool]:
    """(the type, whether it may be None) of ``X | None`` or ``X``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1, hint
        return args[0], True
    return hint, False


def _agrees(table: schema.Table, hints: dict[str, object]) -> None:
    assert list(table.fields) == list(hints), table.name
    for key, kind in table.fields.items():
        hint, nullable = _split(hints[key])
        if isinstance(kind, schema.Table):
            _agrees(kind, _hints(hint))
        elif kind == "objects":
            assert typing.get_origin(hint) is list, key
        else:
            assert hint == KINDS[kind], (table.name, key, hint)
        assert nullable == (key in table.nullable), (table.name, key)


@pytest.mark.parametrize("table", [schema.ENTRY, schema.EVENT, schema.LIMITS], ids=lambda t: t.name)
def test_each_table_agrees_with_its_typed_dict(table: schema.Table) -> None:
    _agrees(table, _hints(TYPED[table.name]))


def test_the_summary_table_is_the_summary_class_and_its_record() -> None:
    assert tuple(schema.SUMMARY.fields) == FIELDS
    hints = _hints(Summary)
    for key, kind in schema.SUMMARY.fields.items():
        hint, _ = _split(hints[key])
        assert isinstance(kind, str)
        assert kind == "objects" or hint == KINDS[kind], key
    # the run log's copy of it: the same keys, each of them nullable
    assert list(_hints(records.SummaryRecord)) == list(FIELDS)
    _agrees(schema.SUMMARY, _hints(records.SummaryRecord))


def test_the_result_is_a_summary_with_the_output() -> None:
    assert [f.name for f in dataclasses.fields(Result)] == [*FIELDS, "stdout", "stderr"]
    result_hints, summary_hints = _hints(Result), _hints(Summary)
    assert {key: result_hints[key] for key in FIELDS} == summary_hints
    values: dict[str, typing.Any] = dict.fromkeys(FIELDS)
    result = Result(**{**values, "status": "ok"})
    assert isinstance(result, Summary)
    assert result.ok
    assert result.stdout is None


def test_check_keeps_what_is_of_its_kind() -> None:
    entry = {"pid": 5, "start": 1, "command": ["a", 1], "mem": None, "since": True, "lock": "x", "zzz": 1}
    assert schema.check(entry, schema.ENTRY) == {"pid": 5, "start": 1, "mem": None, "lock": "x"}
    assert schema.check({"ended": True, "number": None}, schema.ENTRY) == {}  # derived; not nullable


def test_check_descends_into_nested_tables_and_keeps_unknown_event_keys() -> None:
    event = {
        "event": "exit",
        "t": None,
        "extra": [1],
        "limits": {"mem": "2G", "grace": 10, "own": 1},
        "summary": {"status": "ok", "exit_code": 1.5, "culprit": [{"pid": 1}], "frozen_s": 0},
    }
    assert schema.check(event, schema.EVENT) == {
        "event": "exit",
        "extra": [1],
        "limits": {"grace": 10, "own": 1},
        "summary": {"status": "ok", "culprit": [{"pid": 1}], "frozen_s": 0},
    }
    assert schema.check({"summary": [1], "limits": None}, schema.EVENT) == {}


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [(True, "int", False), (True, "bool", True), (1, "float", True), (1.5, "int", False),
     (["a"], "words", True), ([1], "words", False), ([{}], "objects", True), ("x", "str", True)],
)  # fmt: skip
def test_is_kind(value: object, kind: str, expected: bool) -> None:
    assert schema.is_kind(value, kind) is expected
