"""Pure parsers and formatters for sizes, durations and signals.

Parsed by hand, not with ``re``: every ``seqbox run`` parses its limits, and
importing ``re`` costs it several milliseconds."""

from __future__ import annotations

from seqbox.errors import UsageError

_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_NONE_WORDS = ("none", "0", "off", "unlimited", "infinity", "max")

_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
MAX_SECONDS = 100 * 365 * 86400.0
_DIGITS = frozenset("0123456789")


def _number(word: str, pos: int = 0) -> int:
    """Where the number starting at ``pos`` ends (``12``, ``1.5``, ``2.``,
    ``.5``; ASCII digits only), or ``pos`` when there is none."""
    end = pos
    while end < len(word) and word[end] in _DIGITS:
        end += 1
    whole = end > pos
    if end < len(word) and word[end] == ".":
        fraction = end + 1
        while fraction < len(word) and word[fraction] in _DIGITS:
            fraction += 1
        if whole or fraction > end + 1:
            end = fraction
    return end if end > pos and word[pos:end] != "." else pos


def _size_power(unit: str) -> int | None:
    """``""``, ``b`` -> 0; ``k``, ``kb``, ``kib`` -> 1 ... ``e`` -> 6; else None."""
    if unit in ("", "b"):
        return 0
    if unit[:1] in _SIZE_POWERS and unit[1:] in ("", "b", "ib"):
        return _SIZE_POWERS[unit[0]]
    return None


def parse_size(text: str | int | float, what: str = "size") -> int | None:
    """``512M``, ``2G``, ``1.5GiB``, ``2048MB``, bytes -> bytes; ``0``/``none`` -> None.

    Units are binary and case-insensitive: K, KB and KiB all mean 1024.
    """
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a size like 512M or 2G, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise UsageError(f"{what}: a size cannot be negative, got {text}")
        return int(text) or None
    word = text.strip().lower()
    if word in _NONE_WORDS:
        return None
    end = _number(word)
    power = _size_power(word[end:].lstrip()) if end else None
    if power is None:
        raise UsageError(f"{what}: expected a size like 512M, 2G, 1.5GiB or a number of bytes, got {text!r}")
    value = int(float(word[:end]) * (1024**power))
    return value or None


MIN_LIMIT = 1 << 20  # a memory limit under 1 MiB is a mistake (a forgotten unit)
MAX_LIMIT = 1 << 62  # 4 EiB: above what any kernel counts (cgroup v1 stops at 2^63 - 4 KiB)


def parse_mem_limit(text: str | int | float, what: str = "--mem") -> int | None:
    """A memory limit: :func:`parse_size` within 1 MiB .. 4 EiB; ``0``/``none``
    -> None. A bare number under 1 MiB gets a hint (``300`` -> did you mean 300M?)."""
    value = parse_size(text, what)
    if value is None:
        return None
    if value < MIN_LIMIT:
        bare = str(text).strip()
        hint = f"; did you mean {bare}M?" if bare.isdigit() else ""
        raise UsageError(f"{what}: a memory limit must be at least 1M, got {text!r} ({value} bytes){hint}")
    if value > MAX_LIMIT:
        raise UsageError(f"{what}: a memory limit must be at most 4E (2^62 bytes), got {text!r}")
    return value


def parse_duration(text: str | int | float, what: str = "duration") -> float | None:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``500ms`` -> seconds; ``0``/``none`` -> None."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a duration like 90s or 5m, got {text!r}")
    if isinstance(text, (int, float)):
        if not 0 <= text < MAX_SECONDS:  # also NaN and infinity
            raise UsageError(f"{what}: expected a duration of 0 to 100 years in seconds, got {text}")
        return float(text) or None
    word = text.strip().lower()
    if word in _NONE_WORDS:
        return None
    total, pos = 0.0, 0
    compact = word.replace(" ", "")
    while pos < len(compact):
        end = _number(compact, pos)
        if end == pos:
            raise UsageError(f"{what}: expected a duration like 90, 90s, 5m or 1h30m, got {text!r}")
        number = float(compact[pos:end])
        while end < len(compact) and compact[end].isspace():
            end += 1
        if compact.startswith("ms", end):
            unit = "ms"
        else:
            unit = compact[end] if compact[end : end + 1] in ("s", "m", "h", "d") else ""
        total += number * _DURATION_SECONDS[unit]
        pos = end + len(unit)
    if not compact:
        raise UsageError(f"{what}: expected a duration like 90, 90s, 5m or 1h30m, got {text!r}")
    if total >= MAX_SECONDS:
        raise UsageError(f"{what}: a duration must be under 100 years, got {text!r}")
    return total or None


def parse_grace(text: str | int | float, what: str = "grace") -> float:
    """Like :func:`parse_duration`, but ``0`` means "no grace" rather than "none"."""
    return parse_duration(text, what) or 0.0


def parse_signal(text: str | int, what: str = "signal") -> int:
    """``TERM``, ``SIGINT``, ``int``, ``9`` -> a signal number."""
    import signal

    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    else:
        word = str(text).strip().upper()
        if word.isdigit():
            number = int(word)
        else:
            name = word if word.startswith("SIG") else "SIG" + word
            sig = getattr(signal, name, None)
            if not isinstance(sig, signal.Signals):
                raise UsageError(f"{what}: unknown signal {text!r} (try TERM, INT, KILL or a number)")
            number = int(sig)
    if not 1 <= number < signal.NSIG:
        raise UsageError(f"{what}: signal number out of range: {text!r}")
    return number


MAX_PIDS = 4194304  # the kernel's PID_MAX_LIMIT: no more tasks can exist


def parse_pids(text: str | int, what: str) -> int | None:
    """A process limit such as ``--pids 64`` (1 .. 4194304); ``none`` -> None.
    ``0`` is refused: a tree of no process cannot run its command."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise UsageError(f"{what}: expected a whole number of processes, got {text!r}")
    if isinstance(text, str):
        word = text.strip().lower()
        if word in ("none", "off", "unlimited", "infinity", "max"):
            return None
        if not word.isdigit():
            raise UsageError(f"{what}: expected a whole number of processes, got {text!r}")
        value = int(word)
    else:
        value = text
    if not 1 <= value <= MAX_PIDS:
        raise UsageError(f"{what}: expected 1 to {MAX_PIDS} processes (or none for no limit), got {text!r}")
    return value


def parse_count(text: str | int, what: str, minimum: int = 0, maximum: int = 1_000_000) -> int:
    """A count where 0 is a real value (``--retry 0``)."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise UsageError(f"{what}: expected a whole number, got {text!r}")
    if isinstance(text, str) and not text.strip().isdigit():
        raise UsageError(f"{what}: expected a whole number, got {text!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise UsageError(f"{what}: expected a whole number from {minimum} to {maximum}, got {text!r}")
    return value


def parse_fraction(text: str | int | float, what: str) -> float | None:
    """``0.5`` or ``50%`` -> 0.5; ``0``/``none`` -> None (no warning)."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a fraction like 0.5 or 50%, got {text!r}")
    try:
        if isinstance(text, (int, float)):
            value = float(text)
        else:
            word = text.strip().lower()
            if word in _NONE_WORDS:
                return None
            value = float(word[:-1]) / 100 if word.endswith("%") else float(word)
    except ValueError:
        raise UsageError(f"{what}: expected a fraction like 0.5 or 50%, got {text!r}") from None
    if not 0 <= value <= 1:
        raise UsageError(f"{what}: expected a fraction between 0 and 1, got {text!r}")
    return value or None


def parse_cpus(text: str | int | float, what: str = "cpus") -> float | None:
    """``1.5`` cores -> 1.5; ``0``/``none`` -> None."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a number of cores like 1.5, got {text!r}")
    try:
        if isinstance(text, str) and text.strip().lower() in _NONE_WORDS and text.strip() != "0":
            return None
        value = float(text)
    except ValueError:
        raise UsageError(f"{what}: expected a number of cores like 1.5, got {text!r}") from None
    if not 0.01 <= value < 1e6:  # also rejects NaN and infinity
        raise UsageError(
            f"{what}: expected a number of cores from 0.01 (or none for no quota), like 1.5, got {text!r}"
        )
    return value


def format_size(n: int | None) -> str:
    """1.5 GiB, 256.0 MiB, 12.0 KiB, 512 B."""
    if n is None:
        return "none"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """1h02m, 1m12s, 4.2s."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
