"""JSON text without the ``json`` package, which costs the run path
milliseconds to import (it brings ``re``): its C accelerator ``_json`` does
the work, as ``json`` itself would."""

from __future__ import annotations

import math

try:
    from _json import encode_basestring_ascii as _quote
except ImportError:  # pragma: no cover - an interpreter without the accelerator
    from json.encoder import py_encode_basestring_ascii as _quote


def dumps(value: object) -> str:
    """JSON text of a record (str, int, float, bool, None, list, tuple, dict),
    ASCII-only."""
    if isinstance(value, str):
        return str(_quote(value))
    if value is None or value is True or value is False:
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return str(_quote(str(value)))


class _Options:
    """What ``_json.make_scanner`` asks of its context (``json.JSONDecoder``'s defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def loads(text: str | bytes) -> object:
    """The value of one JSON text (surrounding whitespace allowed). Raises
    ValueError when it is not one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    body = text.strip(" \t\n\r")
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - an interpreter without the accelerator
        import json

        return json.loads(body)
    try:
        value, end = make_scanner(_Options())(body, 0)  # type: ignore[arg-type]  # duck-typed context
    except StopIteration as stop:
        raise ValueError(f"not JSON: stops at character {stop.value}") from None
    except (SystemError, ValueError):
        # Some errors the accelerator reports through json.decoder's exception
        # class, which it cannot find until json is imported (a SystemError
        # then): let json itself say what is wrong, on this rare path only.
        import json

        return json.loads(body)
    if end != len(body):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value
