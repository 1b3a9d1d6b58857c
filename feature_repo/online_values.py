"""Stored feature values (serialized Feast ``Value`` protos) → Python, as Feast's type map converts them.

Why: serving converts every feature of every request. Parsing a ``Value`` message, asking its ``WhichOneof``
and reading the field costs about a microsecond per value in Python's protobuf; the messages Feast writes for
scalars are a tag byte and a payload (see ``online_encode.py`` for the writing side), so the common ones are
read here directly from the bytes: a double or float (fixed width), an int64, int32 or bool (a varint), a
short string or bytes value (one length byte). Each rule only accepts a message that is exactly that one
field; anything else (lists, timestamps, a longer or unusual encoding) goes through the proto and
``feast_value_type_to_python_type``, so the answer is always Feast's.
``tests/feature_repo/test_online_read_many.py`` checks both give the same values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

__all__ = ["to_python"]

_NOT_MINE = object()  # a message the fast rule does not take: the proto path reads it
_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from
_INT32 = range(-(2**31), 2**31)
_MAX_VARINT = 11  # tag + 10 bytes: the longest int64 varint


def _key(field: int, wire: int) -> int:
    """A field's tag byte (field number < 16): (number << 3) | wire type (feast/types/Value.proto numbers)."""
    return (field << 3) | wire


def _double(b: bytes) -> Any:
    return _DOUBLE(b, 1)[0] if len(b) == 9 else _NOT_MINE


def _float(b: bytes) -> Any:
    return _FLOAT(b, 1)[0] if len(b) == 5 else _NOT_MINE


def _varint(b: bytes) -> Any:
    """The signed 64-bit value of a varint that fills the rest of the message."""
    n = len(b)
    if n == 2 and b[1] < 0x80:
        return b[1]
    if n > _MAX_VARINT:
        return _NOT_MINE
    value = shift = 0
    for i in range(1, n):
        byte = b[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i != n - 1:
                return _NOT_MINE  # another field follows
            return value - (1 << 64) if value >= 1 << 63 else value
    return _NOT_MINE


def _int32(b: bytes) -> Any:
    value = _varint(b)
    return value if value is _NOT_MINE or value in _INT32 else _NOT_MINE


def _bool(b: bytes) -> Any:
    return bool(b[1]) if len(b) == 2 and b[1] < 2 else _NOT_MINE


def _short(b: bytes) -> bytes | None:
    """The payload of a length-delimited field under 128 bytes that fills the message."""
    return b[2:] if len(b) >= 2 and b[1] < 0x80 and len(b) == 2 + b[1] else None


def _string(b: bytes) -> Any:
    payload = _short(b)
    if payload is None:
        return _NOT_MINE
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return _NOT_MINE


def _bytes(b: bytes) -> Any:
    payload = _short(b)
    return _NOT_MINE if payload is None else payload


_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_FAST: dict[int, Callable[[bytes], Any]] = {
    _key(1, _LEN): _bytes,  # bytes_val
    _key(2, _LEN): _string,  # string_val
    _key(3, _VARINT): _int32,  # int32_val
    _key(4, _VARINT): _varint,  # int64_val
    _key(5, _FIXED64): _double,  # double_val
    _key(6, _FIXED32): _float,  # float_val
    _key(7, _VARINT): _bool,  # bool_val
}
#: Value kind → its Python value, where Feast's type map returns the proto field itself; others go through it.
_FIELDS: dict[str, Callable[[ValueProto], Any]] = {
    kind: attrgetter(kind)
    for kind in ("int32_val", "int64_val", "float_val", "double_val", "string_val", "bool_val", "bytes_val")
}


def _proto_path(b: bytes) -> Any:
    value = ValueProto.FromString(b)
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    get = _FIELDS.get(kind)
    return get(value) if get is not None else feast_value_type_to_python_type(value)


def to_python(stored: Sequence[bytes | None]) -> list[Any]:
    """Each stored value as Feast's type map gives it; None for an unset value (``b""``) or one not stored."""
    out = []
    for b in stored:
        if not b:
            out.append(None)
            continue
        fast = _FAST.get(b[0])
        value = _NOT_MINE if fast is None else fast(b)
        out.append(_proto_path(b) if value is _NOT_MINE else value)
    return out
