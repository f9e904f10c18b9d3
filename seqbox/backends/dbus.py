"""The D-Bus wire format, as far as asking systemd for a scope needs it.

Values by type code: ``y`` byte, ``b`` boolean, ``n``/``q``/``i``/``u``/``x``/``t``
16-, 32- and 64-bit integers, ``h`` a file descriptor's index (an ``int``),
``d`` double, ``s`` string, ``o`` object path, ``g`` signature (all ``str``),
``v`` a :class:`Variant`, ``a`` array (a ``list``), ``(...)`` struct and
``{..}`` dict entry (``tuple``). seqbox sends only a few of these, but reads
whatever the manager's signals carry. Each value starts at a multiple of its
alignment (its size for numbers; 4 for strings and array lengths; 8 for structs
and dict entries; 1 for signatures and variants), counted from the start of the
message; a message body starts at a multiple of 8, so a body is marshalled on
its own. Written little-endian; read in either byte order.

A message: the fixed header (byte order, type, flags, protocol version 1, body
length, serial), the header fields ``a(yv)`` (path, interface, member, ...),
padding to 8, the body. Pure: bytes in, values out; malformed data raises
:class:`BusError`.
"""

from __future__ import annotations

import struct

from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
# header field codes
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE = range(1, 9)
FIELD_TYPES = {PATH: "o", INTERFACE: "s", MEMBER: "s", ERROR_NAME: "s", REPLY_SERIAL: "u",
               DESTINATION: "s", SENDER: "s", SIGNATURE: "g"}  # fmt: skip
#: the fixed header and the header fields
HEADER_SIGNATURE = "yyyyuua(yv)"
#: the fixed part of the header, up to and including the fields' array length
FIXED_HEADER = 16
#: the longest message the specification allows (128 MiB)
MAX_MESSAGE = 1 << 27
MAX_ARRAY = 1 << 26
ALIGNMENT = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "h": 4, "d": 8,
             "s": 4, "o": 4, "g": 1, "v": 1, "a": 4, "(": 8, "{": 8}  # fmt: skip
#: type code -> (struct format, lowest, highest)
INTEGERS = {
    "y": ("B", 0, 0xFF),
    "n": ("h", -(1 << 15), (1 << 15) - 1),
    "q": ("H", 0, (1 << 16) - 1),
    "i": ("i", -(1 << 31), (1 << 31) - 1),
    "u": ("I", 0, (1 << 32) - 1),
    "h": ("I", 0, (1 << 32) - 1),
    "x": ("q", -(1 << 63), (1 << 63) - 1),
    "t": ("Q", 0, (1 << 64) - 1),
}
CLOSING = {"(": ")", "{": "}"}


class BusError(BackendError):
    """Data that is not a well-formed D-Bus message (or a value that does not
    fit its signature)."""


class Variant:
    """A value with its own signature (one complete type)."""

    __slots__ = ("signature", "value")

    def __init__(self, signature: str, value: object) -> None:
        self.signature = signature
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Variant) and (self.signature, self.value) == (other.signature, other.value)

    def __hash__(self) -> int:
        return hash(self.signature)

    def __repr__(self) -> str:
        return f"Variant({self.signature!r}, {self.value!r})"


def split_signature(signature: str) -> list[str]:
    """The complete types of ``signature`` (``"sa(sv)u"`` -> ``["s", "a(sv)", "u"]``)."""
    types = []
    start = 0
    while start < len(signature):
        end = _type_end(signature, start)
        types.append(signature[start:end])
        start = end
    return types


def _type_end(signature: str, start: int) -> int:
    """Where the complete type starting at ``start`` ends."""
    if start >= len(signature):
        raise BusError(f"signature {signature!r} ends inside a type")
    code = signature[start]
    if code == "a":
        return _type_end(signature, start + 1)
    if code in CLOSING:
        end = start + 1
        fields = 0
        while end < len(signature) and signature[end] != CLOSING[code]:
            end = _type_end(signature, end)
            fields += 1
        if end >= len(signature) or fields == 0:
            raise BusError(f"signature {signature!r} has an empty or unclosed struct")
        if code == "{" and (fields != 2 or signature[start + 1] in "v(a{"):
            raise BusError(f"signature {signature!r} has a dict entry without a basic key and a value")
        return end + 1
    if code not in ALIGNMENT:
        raise BusError(f"type {code!r} of signature {signature!r} is not supported")
    return start + 1


def marshal(signature: str, values: Sequence[object]) -> bytes:
    """``values`` (one per complete type of ``signature``) in the wire format,
    little-endian, aligned from offset 0."""
    types = split_signature(signature)
    if len(types) != len(values):
        raise BusError(f"signature {signature!r} takes {len(types)} values, not {len(values)}")
    out = bytearray()
    for type_, value in zip(types, values, strict=True):
        _write(out, type_, value)
    return bytes(out)


def _pad(out: bytearray, alignment: int) -> None:
    out += bytes(-len(out) % alignment)


def _write(out: bytearray, type_: str, value: object) -> None:
    code = type_[0]
    _pad(out, ALIGNMENT[code])
    if code in INTEGERS:
        fmt, low, high = INTEGERS[code]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise BusError(f"{value!r} is not a D-Bus {type_}")
        out += struct.pack("<" + fmt, value)
    elif code == "b":
        if not isinstance(value, bool):
            raise BusError(f"{value!r} is not a D-Bus boolean")
        out += struct.pack("<I", int(value))
    elif code == "d":
        if not isinstance(value, float):
            raise BusError(f"{value!r} is not a D-Bus double")
        out += struct.pack("<d", value)
    elif code in "sog":
        if not isinstance(value, str):
            raise BusError(f"{value!r} is not a D-Bus {type_}")
        data = value.encode()
        if b"\0" in data:
            raise BusError(f"{value!r} holds a NUL")
        if code == "g":
            if len(data) > 255:
                raise BusError(f"signature {value!r} is longer than 255 bytes")
            split_signature(value)
            out.append(len(data))
        else:
            out += struct.pack("<I", len(data))
        out += data + b"\0"
    elif code == "v":
        if not isinstance(value, Variant) or len(split_signature(value.signature)) != 1:
            raise BusError(f"{value!r} is not a variant of one complete type")
        _write(out, "g", value.signature)
        _write(out, value.signature, value.value)
    elif code == "a":
        if not isinstance(value, list):
            raise BusError(f"{value!r} is not a list (a D-Bus array)")
        at = len(out)
        out += bytes(4)
        _pad(out, ALIGNMENT[type_[1]])  # padding before the first element is not counted
        start = len(out)
        for item in value:
            _write(out, type_[1:], item)
        if len(out) - start > MAX_ARRAY:
            raise BusError("an array longer than 64 MiB")
        struct.pack_into("<I", out, at, len(out) - start)
    else:  # a struct or a dict entry
        fields = split_signature(type_[1:-1])
        if not isinstance(value, tuple) or len(value) != len(fields):
            raise BusError(f"{value!r} is not a tuple of {len(fields)} ({type_})")
        for field, item in zip(fields, value, strict=True):
            _write(out, field, item)


def unmarshal(signature: str, data: bytes, *, big_endian: bool = False) -> list[object]:
    """The values of ``signature`` from ``data`` (aligned from offset 0); the
    data must hold exactly those."""
    reader = _Reader(data, ">" if big_endian else "<")
    values = [reader.read(type_) for type_ in split_signature(signature)]
    if reader.pos != len(data):
        raise BusError(f"{len(data) - reader.pos} bytes left over after {signature!r}")
    return values


class _Reader:
    __slots__ = ("data", "order", "pos")

    def __init__(self, data: bytes, order: str) -> None:
        self.data = data
        self.order = order
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise BusError(f"the data ends at {len(self.data)}, inside a value at {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def align(self, alignment: int) -> None:
        self.take(-self.pos % alignment)

    def number(self, fmt: str) -> int:
        value: int = struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def text(self, size: int) -> str:
        data = self.take(size + 1)
        if data[-1] != 0 or 0 in data[:-1]:
            raise BusError(f"a string at {self.pos - size - 1} is not NUL-terminated")
        try:
            return data[:-1].decode()
        except UnicodeDecodeError:
            raise BusError(f"a string at {self.pos - size - 1} is not UTF-8") from None

    def read(self, type_: str) -> object:
        code = type_[0]
        self.align(ALIGNMENT[code])
        if code in INTEGERS:
            return self.number(INTEGERS[code][0])
        if code == "b":
            value = self.number("I")
            if value > 1:
                raise BusError(f"a boolean of {value}")
            return value == 1
        if code == "d":
            double: float = struct.unpack(self.order + "d", self.take(8))[0]
            return double
        if code in "so":
            return self.text(self.number("I"))
        if code == "g":
            signature = self.text(self.number("B"))
            split_signature(signature)
            return signature
        if code == "v":
            signature = self.text(self.number("B"))
            if len(split_signature(signature)) != 1:
                raise BusError(f"a variant of signature {signature!r}, not one complete type")
            return Variant(signature, self.read(signature))
        if code == "a":
            size = self.number("I")
            if size > MAX_ARRAY:
                raise BusError(f"an array of {size} bytes")
            self.align(ALIGNMENT[type_[1]])
            end = self.pos + size
            items = []
            while self.pos < end:
                items.append(self.read(type_[1:]))
            if self.pos != end:
                raise BusError(f"an array's last element runs past its length, to {self.pos}")
            return items
        return tuple(self.read(field) for field in split_signature(type_[1:-1]))


class Message:
    """One message: its type, flags, serial, header fields (code -> value) and body."""

    __slots__ = ("big_endian", "body", "fields", "flags", "kind", "serial")

    def __init__(
        self, kind: int, flags: int, serial: int, fields: dict[int, object], body: bytes, big_endian: bool
    ) -> None:
        self.kind = kind
        self.flags = flags
        self.serial = serial
        self.fields = fields
        self.body = body
        self.big_endian = big_endian

    def field(self, code: int) -> object:
        return self.fields.get(code)

    def values(self) -> list[object]:
        """The body's values, by the message's signature."""
        return unmarshal(str(self.fields.get(SIGNATURE, "")), self.body, big_endian=self.big_endian)

    def __repr__(self) -> str:
        return f"Message({self.kind}, serial={self.serial}, {self.fields!r}, {len(self.body)} bytes)"


def encode_message(
    kind: int, serial: int, fields: list[tuple[int, Variant]], signature: str, body: Sequence[object]
) -> bytes:
    """A whole message, little-endian, no flags (a METHOD_CALL expects a reply);
    the SIGNATURE field is added for a non-empty ``signature``."""
    data = marshal(signature, body)
    if signature:
        fields = [*fields, (SIGNATURE, Variant("g", signature))]
    header = bytearray(marshal(HEADER_SIGNATURE, [ord("l"), kind, 0, 1, len(data), serial, fields]))
    _pad(header, 8)
    return bytes(header) + data


def method_call(
    serial: int, *, path: str, interface: str, member: str, destination: str, signature: str,
    body: Sequence[object],
) -> bytes:  # fmt: skip
    """A whole METHOD_CALL message."""
    fields = [
        (PATH, Variant("o", path)),
        (INTERFACE, Variant("s", interface)),
        (MEMBER, Variant("s", member)),
        (DESTINATION, Variant("s", destination)),
    ]
    return encode_message(METHOD_CALL, serial, fields, signature, body)


def split_message(buffer: bytes) -> tuple[Message, int] | None:
    """The first message in ``buffer`` and its length in bytes; None while it
    has not all arrived."""
    if len(buffer) < FIXED_HEADER:
        return None
    order = buffer[:1]
    if order not in (b"l", b"B"):
        raise BusError(f"a message in byte order {order!r}")
    big_endian = order == b"B"
    if buffer[3] != 1:
        raise BusError(f"a message of protocol version {buffer[3]}")
    body_size, _, fields_size = struct.unpack_from(">III" if big_endian else "<III", buffer, 4)
    header_size = FIXED_HEADER + fields_size
    header_size += -header_size % 8
    total = header_size + body_size
    if total > MAX_MESSAGE:
        raise BusError(f"a message of {total} bytes")
    if len(buffer) < total:
        return None
    header = unmarshal(HEADER_SIGNATURE, bytes(buffer[: FIXED_HEADER + fields_size]), big_endian=big_endian)
    kind, flags, serial, raw_fields = header[1], header[2], header[5], header[6]
    if not (isinstance(kind, int) and isinstance(flags, int) and isinstance(serial, int)):
        raise BusError("a malformed header")  # not reached: the signature says what they are
    if serial == 0:
        raise BusError("a message with serial 0")
    fields: dict[int, object] = {}
    for code, variant in raw_fields if isinstance(raw_fields, list) else ():
        expected = FIELD_TYPES.get(code)
        if expected is not None and variant.signature != expected:
            raise BusError(f"header field {code} of type {variant.signature!r}, not {expected!r}")
        fields[code] = variant.value
    message = Message(kind, flags, serial, fields, bytes(buffer[header_size:total]), big_endian)
    return message, total
