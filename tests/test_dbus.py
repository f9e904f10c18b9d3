"""The D-Bus wire format (seqbox/backends/dbus.py), on canned bytes worked out
by hand from the D-Bus specification's marshalling rules: each value aligned
to its type (from the start of the message), arrays prefixed by their length
in bytes (the padding before the first element not counted), strings
NUL-terminated, signatures with a one-byte length."""

from __future__ import annotations

import pytest

from seqbox.backends import dbus
from seqbox.backends.dbus import BusError, Variant


def h(text: str) -> bytes:
    """Bytes from hex written with spaces and comments (``#`` to the end of a line)."""
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


@pytest.mark.parametrize(
    ("signature", "values", "wire"),
    [
        ("y", [7], "07"),
        ("b", [True], "01 00 00 00"),
        ("b", [False], "00 00 00 00"),
        ("u", [0x01020304], "04 03 02 01"),
        ("i", [-2], "fe ff ff ff"),
        ("s", ["ab"], "02 00 00 00 61 62 00"),
        ("s", [""], "00 00 00 00 00"),
        ("o", ["/"], "01 00 00 00 2f 00"),
        ("g", ["au"], "02 61 75 00"),
        # a byte, then a string padded to 4
        ("ys", [1, "x"], "01 00 00 00  01 00 00 00 78 00"),
        # a signature needs no alignment; the uint32 after it does
        ("gu", ["s", 1], "01 73 00 00  01 00 00 00"),
        ("au", [[1, 2]], "08 00 00 00  01 00 00 00  02 00 00 00"),
        ("au", [[]], "00 00 00 00"),
        # an empty array of structs still pads to 8 after its length
        ("a(sv)", [[]], "00 00 00 00  00 00 00 00"),
        # a variant: its signature, then its value aligned to its own type
        ("v", [Variant("u", 5)], "01 75 00 00  05 00 00 00"),
        ("v", [Variant("as", ["a"])], "02 61 73 00  06 00 00 00  01 00 00 00 61 00"),
        ("(yu)", [(1, 2)], "01 00 00 00  02 00 00 00"),
        ("n", [-2], "fe ff"),
        ("yq", [1, 0x0102], "01 00  02 01"),
        ("yx", [1, -1], "01 00 00 00 00 00 00 00  ff ff ff ff ff ff ff ff"),
        ("t", [(1 << 64) - 1], "ff ff ff ff ff ff ff ff"),
        ("h", [3], "03 00 00 00"),
        ("d", [1.0], "00 00 00 00 00 00 f0 3f"),
        # a dict: an array of dict entries, each aligned to 8
        (
            "a{sv}",
            [[("k", Variant("u", 1))]],
            "10 00 00 00 00 00 00 00  01 00 00 00 6b 00  01 75 00  00 00 00  01 00 00 00",
        ),
        ("y(y)", [1, (2,)], "01 00 00 00 00 00 00 00  02"),
    ],
)
def test_values_on_the_wire(signature: str, values: list[object], wire: str) -> None:
    assert dbus.marshal(signature, values) == h(wire)
    assert dbus.unmarshal(signature, h(wire)) == values


def test_a_property_array_as_start_transient_unit_takes_it() -> None:
    wire = h("""
        14 00 00 00              # the array's length: 20 bytes, from offset 8
        00 00 00 00              # padding to the struct's 8 (not counted)
        08 00 00 00 44 65 6c 65 67 61 74 65 00   # "Delegate" at 8
        01 62 00                 # the variant's signature "b" at 21
        01 00 00 00              # true, at 24
    """)
    value = [[("Delegate", Variant("b", True))]]
    assert dbus.marshal("a(sv)", value) == wire
    assert dbus.unmarshal("a(sv)", wire) == value


def test_two_structs_in_an_array_each_start_at_8() -> None:
    wire = h("""
        0c 00 00 00  00 00 00 00   # 12 bytes of elements, from offset 8
        01 00 00 00  00 00 00 00   # (1,) at 8, padding to 16
        02 00 00 00                # (2,) at 16
    """)
    assert dbus.marshal("a(u)", [[(1,), (2,)]]) == wire
    assert dbus.unmarshal("a(u)", wire) == [[(1,), (2,)]]


def test_a_method_call_message() -> None:
    wire = h("""
        6c 01 00 01     # little-endian, METHOD_CALL, no flags, version 1
        00 00 00 00     # no body
        01 00 00 00     # serial 1
        3c 00 00 00     # 60 bytes of header fields, from 16
        01 01 6f 00  01 00 00 00 2f 00  00 00 00 00 00 00              # PATH "/"
        02 01 73 00  03 00 00 00 61 2e 62 00  00 00 00 00              # INTERFACE "a.b"
        03 01 73 00  01 00 00 00 4d 00  00 00 00 00 00 00              # MEMBER "M"
        06 01 73 00  03 00 00 00 64 2e 65 00                           # DESTINATION "d.e"
        00 00 00 00     # the header padded to 8
    """)
    call = dbus.method_call(
        1, path="/", interface="a.b", member="M", destination="d.e", signature="", body=[]
    )
    assert call == wire
    split = dbus.split_message(wire + b"more")
    assert split is not None
    message, size = split
    assert size == len(wire)
    assert (message.kind, message.serial, message.flags) == (dbus.METHOD_CALL, 1, 0)
    assert message.fields == {
        dbus.PATH: "/",
        dbus.INTERFACE: "a.b",
        dbus.MEMBER: "M",
        dbus.DESTINATION: "d.e",
    }
    assert message.values() == []


BIG_ENDIAN_REPLY = h("""
    42 02 00 01     # big-endian, METHOD_RETURN, no flags, version 1
    00 00 00 09     # 9 bytes of body
    00 00 00 07     # serial 7
    00 00 00 0f     # 15 bytes of header fields
    05 01 75 00  00 00 00 01    # REPLY_SERIAL 1
    08 01 67 00  01 6f 00       # SIGNATURE "o"
    00                          # padding to 32
    00 00 00 04 2f 6a 2f 31 00  # the body: the object path "/j/1"
""")


def test_a_big_endian_reply_is_read() -> None:
    split = dbus.split_message(BIG_ENDIAN_REPLY)
    assert split is not None
    message, size = split
    assert size == len(BIG_ENDIAN_REPLY) == 41
    assert (message.kind, message.serial) == (dbus.METHOD_RETURN, 7)
    assert message.fields == {dbus.REPLY_SERIAL: 1, dbus.SIGNATURE: "o"}
    assert message.values() == ["/j/1"]


def test_a_message_is_not_split_before_it_has_all_arrived() -> None:
    for cut in range(len(BIG_ENDIAN_REPLY)):
        assert dbus.split_message(BIG_ENDIAN_REPLY[:cut]) is None, cut


def test_a_whole_call_reads_back() -> None:
    body = ["run-x.scope", "fail", [("PIDs", Variant("au", [42])), ("Delegate", Variant("b", True))], []]
    signature = "ssa(sv)a(sa(sv))"
    call = dbus.method_call(9, path="/p", interface="i.f", member="M", destination="d", signature=signature,
                            body=body)  # fmt: skip
    split = dbus.split_message(call)
    assert split is not None
    message, size = split
    assert size == len(call)
    assert message.fields[dbus.SIGNATURE] == signature
    assert message.values() == body


@pytest.mark.parametrize(
    ("signature", "wire", "why"),
    [
        ("b", "02 00 00 00", "a boolean of 2"),
        ("s", "02 00 00 00 61 62 63", "not NUL-terminated"),
        ("s", "02 00 00 00 61 00 00", "not NUL-terminated"),
        ("s", "02 00 00 00 ff fe 00", "not UTF-8"),
        ("s", "05 00 00 00 61", "the data ends"),
        ("u", "01 00 00 00 00", "1 bytes left over"),
        ("au", "06 00 00 00 01 00 00 00 02 00 00 00", "runs past its length"),
        ("v", "02 75 75 00 01 00 00 00", "not one complete type"),
        ("v", "01 7a 00 00 01 00 00 00", "not supported"),  # "z" is no D-Bus type
    ],
)
def test_malformed_data_is_refused(signature: str, wire: str, why: str) -> None:
    with pytest.raises(BusError, match=why):
        dbus.unmarshal(signature, h(wire))


@pytest.mark.parametrize(
    ("signature", "values", "why"),
    [
        ("u", [-1], "not a D-Bus u"),
        ("u", [True], "not a D-Bus u"),
        ("y", [256], "not a D-Bus y"),
        ("b", [1], "not a D-Bus boolean"),
        ("s", ["a\0b"], "holds a NUL"),
        ("s", [b"a"], "not a D-Bus s"),
        ("v", [Variant("uu", 1)], "not a variant of one complete type"),
        ("(uu)", [(1,)], "not a tuple of 2"),
        ("au", [(1,)], "not a list"),
        ("su", ["a"], "takes 2 values, not 1"),
        ("a", [[]], "ends inside a type"),
        ("()", [()], "an empty or unclosed struct"),
        ("(u", [(1,)], "an empty or unclosed struct"),
        ("z", [1], "not supported"),
        ("d", [1], "not a D-Bus double"),
        ("a{vs}", [[]], "without a basic key"),
        ("a{s}", [[]], "without a basic key"),
        ("a{sss}", [[]], "without a basic key"),
    ],
)
def test_values_that_do_not_fit_are_refused(signature: str, values: list[object], why: str) -> None:
    with pytest.raises(BusError, match=why):
        dbus.marshal(signature, values)


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ("48 54 54 50 2f 31 2e 31 20 32 30 30 20 4f 4b 0d", "byte order"),  # "HTTP/1.1 200 OK"
        ("6c 02 00 02 00 00 00 00 01 00 00 00 00 00 00 00", "protocol version 2"),
        ("6c 02 00 01 00 00 00 00 00 00 00 00 00 00 00 00", "serial 0"),
        ("6c 02 00 01 00 00 00 10 01 00 00 00 00 00 00 00", "a message of"),
        # REPLY_SERIAL as a string
        (
            "6c 02 00 01 00 00 00 00 01 00 00 00 09 00 00 0005 01 73 00 00 00 00 00 00  00 00 00 00 00 00 00",
            "header field 5",
        ),
    ],
)
def test_what_is_not_a_message_is_refused(wire: str, why: str) -> None:
    with pytest.raises(BusError, match=why):
        dbus.split_message(h(wire))


def test_signatures_split_into_complete_types() -> None:
    assert dbus.split_signature("ssa(sv)a(sa(sv))") == ["s", "s", "a(sv)", "a(sa(sv))"]
    assert dbus.split_signature("") == []
    assert dbus.split_signature("aau(y(u))") == ["aau", "(y(u))"]


def test_a_properties_changed_signal_is_read_whole() -> None:
    """What a manager sends unasked on a peer-to-peer connection: a signal whose
    body has types seqbox never sends (dicts, 64-bit integers)."""
    fields = [
        (dbus.PATH, Variant("o", "/org/freedesktop/systemd1/unit/x")),
        (dbus.INTERFACE, Variant("s", "org.freedesktop.DBus.Properties")),
        (dbus.MEMBER, Variant("s", "PropertiesChanged")),
    ]
    body = ["org.freedesktop.systemd1.Unit", [("ActiveEnterTimestamp", Variant("t", 1 << 40))], ["Names"]]
    wire = dbus.encode_message(dbus.SIGNAL, 5, fields, "sa{sv}as", body)
    split = dbus.split_message(wire)
    assert split is not None
    message, size = split
    assert size == len(wire)
    assert message.field(dbus.SIGNATURE) == "sa{sv}as"
    assert message.values() == body
