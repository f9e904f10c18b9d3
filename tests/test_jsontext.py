"""JSON without the json package (the run path's queue entries and run logs):
the same text and values as json, and ValueError for what is not JSON."""

from __future__ import annotations

import json
import random

import pytest

from seqbox.jsontext import dumps, loads


def _value(rng: random.Random, depth: int = 0) -> object:
    if depth > 3 or rng.random() < 0.3:
        return rng.choice([0, -5, 2.5, 10**20, "x", 'é\n"\\', "", None, True, False])
    if rng.random() < 0.5:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}\u2603": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_the_same_as_json() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        value = _value(rng)
        assert dumps(value) == json.dumps(value)
        assert loads(dumps(value)) == value
        assert loads(json.dumps(value, ensure_ascii=False).encode()) == value


@pytest.mark.parametrize("text", ["", "{", '{"a": 1}x', "[1,]", "nul", '{"a" 1}', b"\xff", "1 2"])
def test_what_is_not_json_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - torn entries are any ValueError to the queue
        loads(text)
