"""JSON text without the ``json`` package, which costs the run path
milliseconds to import (it brings ``re``): its C accelerator ``_json`` does
the work, as ``json`` itself would."""

from __future__ import annotations


def dumps(value: object) -> str:
    """JSON text of a record (str, int, float, bool, None, list, tuple, dict),
    ASCII-only. The json package costs milliseconds to import on the run path;
    its C string escaper does not."""
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:  # pragma: no cover - an interpreter without the accelerator
        from json.encoder import py_encode_basestring_ascii as quote

    def encode(item: object) -> str:
        if isinstance(item, str):
            return str(quote(item))
        if item is None or item is True or item is False:
            return "null" if item is None else "true" if item else "false"
        if isinstance(item, int):
            return int.__repr__(item)
        if isinstance(item, float):
            import math

            return float.__repr__(item) if math.isfinite(item) else "null"
        if isinstance(item, dict):
            return "{" + ", ".join(f"{quote(str(k))}: {encode(v)}" for k, v in item.items()) + "}"
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(encode(v) for v in item) + "]"
        return str(quote(str(item)))

    return encode(value)


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
    if end != len(body):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value
