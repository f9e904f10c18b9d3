"""A queue entry read while its writer rewrites it (truncate, then write) may
be torn: reading it is a ValueError, and the reader tries again, then takes it
as no entry. Entries are JSON, read and written by the standard ``json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from seqbox import queue

ENTRY = {"pid": 4242, "command": ["pytest", "-x"], "start": 1.5}
#: what a reader may see of ENTRY's text while it is rewritten, and other junk
TORN = [b"", b"{", b'{"pid": 42', b'{"pid" 42}', b"[1,]", b"nul", b"\xff\xfe", b'{"pid": 1}x', b"1 2"]


def test_an_entry_reads_back() -> None:
    text = json.dumps(ENTRY).encode()
    assert queue.parse_entry(text + queue.ENDED_MARK) == {**ENTRY, "ended": True}
    assert queue.parse_entry(text) == ENTRY


@pytest.mark.parametrize("data", [t for t in TORN if t], ids=repr)
def test_a_torn_entry_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: the reader retries
        queue.parse_entry(data)


@pytest.mark.parametrize("data", TORN, ids=repr)
def test_a_reader_takes_a_torn_entry_as_none(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "slot-0").write_bytes(data)
    (tmp_path / "slot-1").write_bytes(json.dumps(ENTRY).encode())
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert queue.read_entry(directory, "slot-0") is None
        assert queue.read_entry(directory, "slot-1") == ENTRY
    finally:
        os.close(directory)
