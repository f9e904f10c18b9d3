"""A queue entry read while its writer rewrites it (cut, then write) may be
torn: reading it is a ValueError, and the reader tries again, then takes it
as no entry. Entries are JSON, read and written by the standard ``json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from seqbox import flocks, queue

ENTRY = {"pid": 4242, "command": ["pytest", "-x"], "start": 1.5}
#: what a reader may see of ENTRY's text while it is rewritten, and other junk
TORN = [b"", b"{", b'{"pid": 42', b'{"pid" 42}', b"[1,]", b"nul", b"\xff\xfe", b'{"pid": 1}x', b"1 2",
        b"{" + b"\0" * 40, b'{"pid": 4242' + b"\0" * 9]  # fmt: skip
# (the last two: a read that took the old length, then copied what the cut had zeroed)


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


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b'{"pid": 1, "command": ["a long command line"]}\nended\n', b'{"pid": 22}'),  # shorter
        (b'{"pid": 1}', b'{"pid": 22, "command": ["a longer one"]}'),  # longer
        (b"", b'{"pid": 3}'),  # a new slot
        (b"17", b"2"),  # another first byte (a ticket number of another decade)
        (b'{"pid": 4}', b""),
    ],
    ids=["shorter", "longer", "empty", "other-first-byte", "to-nothing"],
)
def test_a_rewrite_leaves_exactly_the_new_content(tmp_path: Path, before: bytes, after: bytes) -> None:
    path = tmp_path / "slot-0"
    path.write_bytes(before)
    fd = os.open(path, os.O_RDWR)
    try:
        flocks.write_fd(fd, after)
    finally:
        os.close(fd)
    assert path.read_bytes() == after


def test_a_reader_never_sees_a_rewritten_entry_empty(tmp_path: Path) -> None:
    """Every rewrite keeps the entry's first byte (the same ``{``): ext4 would
    write a file cut to nothing out to disk at its close, on the queue's
    hand-over path. A reader in another process, looking while the entry is
    rewritten 3000 times, never sees nothing (when the file was cut to
    nothing, 17836 of its 20000 reads here were empty: each rewrite waited for
    the disk). It sees the old entry, a prefix of the new one, the new one,
    or, when its read took the old length just before the cut, what the cut
    zeroed (about once in 30 rounds here): a torn read, which the queue's
    reader takes for one (a ValueError, and it reads again)."""
    path = tmp_path / "slot-0"
    entries = [json.dumps({**ENTRY, "pid": pid}).encode() for pid in (1, 22222)]
    path.write_bytes(entries[0])
    reader = os.fork()
    if reader == 0:  # pragma: no cover - the child
        fd = os.open(path, os.O_RDONLY)
        empty = 0
        for _ in range(20000):
            data = os.pread(fd, 4096, 0)
            empty += data == b""
            if not any(e.startswith(data) for e in entries):
                try:
                    queue.parse_entry(data)
                except ValueError:
                    continue  # torn, and taken for torn
                os._exit(2)  # a torn entry that would be taken for a whole one
        os._exit(1 if empty else 0)
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(3000):
            flocks.write_fd(fd, entries[i % 2])
    finally:
        os.close(fd)
        _, status = os.waitpid(reader, 0)
    assert os.waitstatus_to_exitcode(status) == 0
