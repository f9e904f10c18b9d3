"""JSON without the json package (the run path's queue entries and run logs):
the same text and values as json, and ValueError for what is not JSON."""

from __future__ import annotations

import json
import random
import subprocess
import sys

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


def test_what_is_not_json_is_a_value_error_before_json_is_imported() -> None:
    """A torn queue entry read by ``seqbox run``, which never imports json:
    the accelerator alone raised a SystemError for an unclosed object."""
    code = (
        "import sys\n"
        "from seqbox.jsontext import loads\n"
        "assert 'json' not in sys.modules\n"
        "for text in ('{', '{torn', '{\"a\" 1}', '[1,]'):\n"
        "    try:\n"
        "        loads(text)\n"
        "    except ValueError:\n"
        "        continue\n"
        "    raise SystemExit(f'accepted {text!r}')\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.stdout == "ok\n", res
