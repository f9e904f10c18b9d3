"""Sizes, durations and signals as the README documents them."""

from __future__ import annotations

import signal

import pytest

from seqbox import units
from seqbox.errors import SeqboxError, UsageError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MIB),
        ("2G", 2 * GIB),
        ("1.5GiB", 1536 * MIB),
        ("2048MB", 2 * GIB),
        ("4096", 4096),
        ("4096b", 4096),
        ("4096B", 4096),
        ("1k", KIB),
        ("1K", KIB),
        ("1KB", KIB),
        ("1KiB", KIB),
        ("1kib", KIB),
        ("256m", 256 * MIB),
        ("256 MiB", 256 * MIB),
        (" 256M ", 256 * MIB),
        ("1T", 1 << 40),
        ("0.5G", 512 * MIB),
        (".5G", 512 * MIB),
        (268435456, 256 * MIB),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert units.parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "none", "None", "NONE", 0])
def test_parse_size_no_limit(text: str | int) -> None:
    assert units.parse_size(text) is None


@pytest.mark.parametrize("text", ["lots", "", "M", "1.2.3G", "-1G", "12X", "1GG", "1e9", "0x10", -5, True])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(UsageError) as info:
        units.parse_size(text, "--mem")
    assert "--mem" in str(info.value)
    assert isinstance(info.value, SeqboxError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2H", 7200.0),
        ("1d", 86400.0),
        (90, 90.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert units.parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["0", "none", "0s", 0])
def test_parse_duration_none(text: str | int) -> None:
    assert units.parse_duration(text) is None


@pytest.mark.parametrize("text", ["soon", "", "5x", "m", "-5", "5 minutes", "1h-30m", -1, False])
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(UsageError) as info:
        units.parse_duration(text, "--timeout")
    assert "--timeout" in str(info.value)


def test_parse_grace_zero_means_no_grace() -> None:
    assert units.parse_grace("0") == 0.0
    assert units.parse_grace("10s") == 10.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGINT", signal.SIGINT),
        ("int", signal.SIGINT),
        ("9", signal.SIGKILL),
        ("KILL", signal.SIGKILL),
        ("hup", signal.SIGHUP),
        ("SIGUSR1", signal.SIGUSR1),
        (15, signal.SIGTERM),
    ],
)
def test_parse_signal(text: str | int, expected: int) -> None:
    assert units.parse_signal(text) == int(expected)


@pytest.mark.parametrize("text", ["FOO", "SIGFOO", "0", "999", "", "-9", "SIG_IGN", "TERM9"])
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        units.parse_signal(text, "--signal")
    assert "--signal" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"), [("0.5", 0.5), ("50%", 0.5), ("1", 1.0), ("0", None), ("none", None)]
)
def test_parse_fraction(text: str, expected: float | None) -> None:
    assert units.parse_fraction(text, "--warn-at") == expected


@pytest.mark.parametrize("text", ["2", "-0.1", "half", "150%", "nan"])
def test_parse_fraction_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        units.parse_fraction(text, "--warn-at")


@pytest.mark.parametrize("text", ["-1", "x", "1.5"])
def test_parse_pids_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        units.parse_pids(text, "--pids")


@pytest.mark.parametrize(("text", "expected"), [("1.5", 1.5), ("2", 2.0), ("none", None)])
def test_parse_cpus(text: str, expected: float | None) -> None:
    assert units.parse_cpus(text) == expected


@pytest.mark.parametrize("text", ["-1", "lots", "nan"])
def test_parse_cpus_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        units.parse_cpus(text, "--cpus")


def test_parse_cpus_rejects_infinity() -> None:
    with pytest.raises(UsageError):
        units.parse_cpus("inf", "--cpus")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (256 * MIB, "256.0 MiB"),
        (int(1.5 * GIB), "1.5 GiB"),
        (512, "512 B"),
        (12 * KIB, "12.0 KiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    """The unit the memory-kill message uses ("memory limit 256.0 MiB exceeded")."""
    assert units.format_size(size) == text
