"""Arrow columns → exactly the bytes Feast 0.67's online stores write, without a proto message per value.

Why: Feast's own path (``_convert_arrow_to_proto`` → ``online_write_batch``) builds a Python ``Value`` proto for
every feature value and an ``EntityKey`` proto for every row, then serializes each one; at a million entities that
is most of a materialization's time. The encodings involved are tiny and fixed (a protobuf tag byte, then a
varint, 4 or 8 little-endian bytes, or a length-prefixed string), so they are built here column by column with
numpy and Arrow compute. Every rule below mirrors one of Feast's, quirks included:

- a null value, and NaN of a numeric feature, is an empty ``Value`` (``b""``); a null timestamp feature is
  ``unix_timestamp_val`` = INT64_MIN (Feast reads NaT through numpy);
- an integer column with nulls goes through float64 in Feast (``to_numpy``): values beyond ±2^53 would be
  rounded there, so such a column is not encoded here (``unsupported`` says so and the caller uses Feast's path);
- event times are what Feast's ``datetime`` holds: microseconds, nanoseconds cut off (``to_pydatetime``).

``tests/feature_repo/test_online_encode.py`` writes the same tables through Feast's path and through this one into
real SQLite and Redis stores and compares every stored byte and every value read back through Feast.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView, ValueType
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto

__all__ = [
    "EncodedRows",
    "encode_rows",
    "entity_keys",
    "event_micros",
    "sqlite_event_seconds",
    "timestamp_protos",
    "unsupported",
    "value_bytes",
    "value_texts",
]

# protobuf wire format: a field's key byte is (field number << 3) | wire type (feast/types/Value.proto numbers)
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_VALUE_FIELDS: dict[ValueType, tuple[int, int]] = {
    ValueType.STRING: (2, _LEN),
    ValueType.INT32: (3, _VARINT),
    ValueType.INT64: (4, _VARINT),
    ValueType.DOUBLE: (5, _FIXED64),
    ValueType.FLOAT: (6, _FIXED32),
    ValueType.BOOL: (7, _VARINT),
    ValueType.UNIX_TIMESTAMP: (8, _VARINT),
}
#: The Arrow types each supported value type is encoded from (anything else goes through Feast's conversion).
_ARROW_TYPES: dict[ValueType, tuple[pa.DataType, ...]] = {
    ValueType.STRING: (pa.string(), pa.large_string()),
    ValueType.INT32: (pa.int32(),),
    ValueType.INT64: (pa.int64(),),
    ValueType.DOUBLE: (pa.float64(),),
    ValueType.FLOAT: (pa.float32(),),
    ValueType.BOOL: (pa.bool_(),),
}
#: Join-key types of serialize_entity_key (v3): the Arrow types and how the value is packed.
_KEY_TYPES: dict[ValueType, tuple[tuple[pa.DataType, ...], str | None]] = {
    ValueType.STRING: ((pa.string(), pa.large_string()), None),
    ValueType.INT64: ((pa.int64(),), "<i8"),
    ValueType.INT32: ((pa.int32(),), "<i4"),
}
_EXACT_FLOAT_INT = 2**53  # integers a float64 holds exactly (Feast's path for integer columns with nulls)
_INT64_MIN = np.iinfo(np.int64).min
_US = 1_000_000
_UNIT_US = {"s": _US, "ms": 1_000, "us": 1}
_EPOCH = datetime(1970, 1, 1)


def _key(field: int, wire: int) -> int:
    return (field << 3) | wire


# --- building binary arrays from byte matrices --------------------------------------------------------------


def _binary(matrix: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Row ``i`` is the first ``lengths[i]`` bytes of ``matrix[i]`` (a row of length 0 is ``b""``)."""
    n, width = matrix.shape
    data = matrix[np.arange(width)[None, :] < lengths[:, None]]  # row-major: the rows' bytes back to back
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (negatives as their 64-bit two's complement: 10 bytes): (n x 10, lengths)."""
    u = values.astype(np.int64).view(np.uint64)
    lengths = np.ones(len(u), np.int64)
    for i in range(1, 10):
        lengths += u >= np.uint64(1 << (7 * i))
    matrix = np.empty((len(u), 10), np.uint8)
    for i in range(10):
        group = ((u >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, i] = group | np.where(lengths > i + 1, 0x80, 0).astype(np.uint8)
    return matrix, lengths


def _tagged(tag: int, matrix: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.BinaryArray:
    """``tag`` then each row's bytes; invalid rows are ``b""``."""
    out = np.empty((matrix.shape[0], matrix.shape[1] + 1), np.uint8)
    out[:, 0] = tag
    out[:, 1:] = matrix
    return _binary(out, np.where(valid, lengths + 1, 0))


def _fixed(values: np.ndarray, dtype: str) -> np.ndarray:
    """Little-endian bytes of each value: an n x itemsize matrix."""
    raw = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return raw.view(np.uint8).reshape(len(raw), raw.itemsize)


def _valid(column: pa.Array) -> np.ndarray:
    if column.null_count == 0:
        return np.ones(len(column), bool)
    return column.is_valid().to_numpy(zero_copy_only=False)


def _length_prefixed(tag_bytes: bytes, column: pa.Array, length_format: str | None) -> pa.BinaryArray:
    """``tag_bytes`` + the UTF-8 length (varint, or packed with ``length_format``) + the bytes of each string."""
    raw = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    lengths = pc.fill_null(pc.binary_length(raw), 0).to_numpy().astype(np.int64)
    if length_format is None:
        head, head_len = _varints(lengths)
    else:
        head = _fixed(lengths, length_format)
        head_len = np.full(len(lengths), head.shape[1], np.int64)
    prefix = np.frombuffer(tag_bytes, np.uint8)
    matrix = np.empty((len(lengths), len(prefix) + head.shape[1]), np.uint8)
    matrix[:, : len(prefix)] = prefix
    matrix[:, len(prefix) :] = head
    header = _binary(matrix, head_len + len(prefix))
    joined = pc.binary_join_element_wise(header, raw.cast(pa.binary()), pa.scalar(b"", pa.binary()))
    return pc.fill_null(joined, pa.scalar(b"", pa.binary()))


# --- feature values ------------------------------------------------------------------------------------------


def unsupported(view: FeatureView, table: pa.Table | pa.RecordBatch, entity: str, key_type: ValueType) -> str | None:
    """Why ``table`` cannot be encoded here for ``view`` (then Feast's own conversion must write it), or None."""
    if len(view.entity_columns) != 1 or view.entity_columns[0].name != entity:
        return f"the view's join keys are {[c.name for c in view.entity_columns]}: only one ({entity}) is encoded"
    names = set(table.schema.names)
    key_types, _ = _KEY_TYPES.get(key_type, ((), None))
    if entity not in names or table.schema.field(entity).type not in key_types:
        got = table.schema.field(entity).type if entity in names else "missing"
        return f"join key {entity}: {key_type.name} from Arrow {got} is not encoded"
    ts_field = view.batch_source.timestamp_field if view.batch_source is not None else None
    if ts_field not in names or not pa.types.is_timestamp(table.schema.field(ts_field).type):
        return f"event timestamp column {ts_field!r} is not an Arrow timestamp column"
    if view.batch_source.created_timestamp_column:
        return f"created timestamp column {view.batch_source.created_timestamp_column!r} is not encoded"
    for feature in view.features:
        kind = feature.dtype.to_value_type()
        if feature.name not in names:
            return f"feature {feature.name}: no such column"
        arrow = table.schema.field(feature.name).type
        if kind == ValueType.UNIX_TIMESTAMP:
            if not pa.types.is_timestamp(arrow):
                return f"feature {feature.name}: UNIX_TIMESTAMP from Arrow {arrow} is not encoded"
            continue
        if arrow not in _ARROW_TYPES.get(kind, ()):
            return f"feature {feature.name}: {kind.name} from Arrow {arrow} is not encoded"
        column = table.column(feature.name)
        if pa.types.is_integer(arrow) and column.null_count:
            bounds = pc.min_max(column)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None and max(-low, high) > _EXACT_FLOAT_INT:
                return f"feature {feature.name}: integers beyond 2^53 with nulls (Feast rounds them through float64)"
    return None


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def value_bytes(column: pa.Array | pa.ChunkedArray, value_type: ValueType) -> pa.BinaryArray:
    """The serialized ``Value`` proto of every row of ``column`` (see ``unsupported`` for what is encodable)."""
    column = _combined(column)
    field, wire = _VALUE_FIELDS[value_type]
    tag = _key(field, wire)
    valid = _valid(column)
    if value_type == ValueType.STRING:
        return _length_prefixed(bytes([tag]), column, None)
    if value_type == ValueType.UNIX_TIMESTAMP:
        seconds = _floor_seconds(column)
        return _tagged(tag, *_varints(seconds), np.ones(len(seconds), bool))
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        values = column.to_numpy(zero_copy_only=False)  # nulls are NaN
        matrix = _fixed(values, "f8" if value_type == ValueType.DOUBLE else "f4")
        return _tagged(tag, matrix, np.full(len(values), matrix.shape[1]), valid & ~np.isnan(values))
    if value_type == ValueType.BOOL:
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8)
        return _tagged(tag, values[:, None], np.ones(len(values), np.int64), valid)
    values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)  # INT32, INT64
    return _tagged(tag, *_varints(values), valid)


def value_texts(column: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[str | None]:
    """What Feast's SQLite store puts in ``value_text`` (``extract_text_and_num``): the string, ``str()`` of a
    number or bool (a FLOAT through its float32 value), None for a null/NaN value and for timestamps."""
    column = _combined(column)
    if value_type == ValueType.UNIX_TIMESTAMP:
        return [None] * len(column)
    if value_type == ValueType.STRING:
        return column.to_pylist()
    valid = _valid(column)
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        values = column.to_numpy(zero_copy_only=False)
        valid &= ~np.isnan(values)
        texts: list[str | None] = list(map(repr, values.astype(np.float64).tolist()))
    elif value_type == ValueType.BOOL:
        texts = ["True" if v else "False" for v in pc.fill_null(column, False).to_numpy(zero_copy_only=False)]
    else:
        texts = pc.cast(column, pa.string()).to_pylist()  # Arrow writes integers as str() does
    for i in np.flatnonzero(~valid).tolist():
        texts[i] = None
    return texts


# --- entity keys and timestamps ------------------------------------------------------------------------------


def entity_keys(column: pa.Array | pa.ChunkedArray, join_key: str, key_type: ValueType) -> pa.BinaryArray:
    """``serialize_entity_key`` (version 3) of a one-key ``EntityKey`` per row; a null key is an error."""
    column = _combined(column)
    if column.null_count:
        row = int(np.flatnonzero(~_valid(column))[0])
        raise ValueError(f"join key column {join_key!r} is null at row {row}: every online row needs its entity")
    name = join_key.encode("utf8")
    enum = ValueTypeProto.Enum.Value(key_type.name)  # the serialized key names its value type (proto enum number)
    head = struct.pack("<III", 1, ValueTypeProto.STRING, len(name)) + name + struct.pack("<I", enum)
    _, packing = _KEY_TYPES[key_type]
    if packing is None:
        return _length_prefixed(head, column, "<u4")
    payload = _fixed(column.to_numpy(), packing)
    prefix = np.frombuffer(head + struct.pack("<I", payload.shape[1]), np.uint8)
    matrix = np.empty((len(column), len(prefix) + payload.shape[1]), np.uint8)
    matrix[:, : len(prefix)] = prefix
    matrix[:, len(prefix) :] = payload
    return _binary(matrix, np.full(len(column), matrix.shape[1], np.int64))


def _floor_seconds(column: pa.Array) -> np.ndarray:
    """Whole seconds (floored) of a timestamp column, null as INT64_MIN (numpy's NaT), as Feast reads them."""
    unit = column.type.unit
    raw = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
    per_second = _US * 1_000 if unit == "ns" else _US // _UNIT_US[unit]
    seconds = np.floor_divide(raw, per_second)
    return np.where(_valid(column), seconds, _INT64_MIN)


def event_micros(column: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """Event times in µs since the epoch (UTC): what Feast's ``datetime`` of each row holds (ns cut off)."""
    column = _combined(column)
    if column.null_count:
        row = int(np.flatnonzero(~_valid(column))[0])
        raise ValueError(f"event timestamp column {name!r} is null at row {row}")
    raw = column.cast(pa.int64()).to_numpy()
    unit = column.type.unit
    return np.floor_divide(raw, 1_000) if unit == "ns" else raw * _UNIT_US[unit]


def timestamp_protos(micros: np.ndarray) -> pa.BinaryArray:
    """``google.protobuf.Timestamp`` bytes of each time (``FromDatetime``): seconds then nanos, zeros omitted."""
    seconds = np.floor_divide(micros, _US)
    nanos = (micros - seconds * _US) * 1_000
    parts = [_tagged(_key(field, _VARINT), *_varints(v), v != 0) for field, v in ((1, seconds), (2, nanos))]
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))


def sqlite_event_seconds(micros: np.ndarray) -> list[int]:
    """What Feast's SQLite store stores as ``event_ts``: sqlite3's adapter registered by Feast writes
    ``int(naive_utc_datetime.timestamp())``, i.e. the wall time read in the machine's local zone."""
    seconds = np.floor_divide(micros, _US)
    if time.timezone == 0 and not time.daylight:  # local time is UTC: the same float arithmetic, vectorized
        exact = seconds.astype(np.float64) + (micros - seconds * _US).astype(np.float64) / 1e6
        return np.trunc(exact).astype(np.int64).tolist()
    return [int((_EPOCH + timedelta(microseconds=us)).timestamp()) for us in micros.tolist()]


# --- a whole table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedRows:
    """One table's rows in Feast's online format, column-wise."""

    keys: pa.BinaryArray  # serialized EntityKey (v3) per row
    values: dict[str, pa.BinaryArray]  # feature name → serialized Value per row (view order)
    micros: np.ndarray  # event time per row, µs since the epoch (UTC)


def encode_rows(view: FeatureView, table: pa.Table | pa.RecordBatch, entity: str, key_type: ValueType) -> EncodedRows:
    """Every row of ``table`` (checked with ``unsupported`` first) encoded as Feast's write path would."""
    return EncodedRows(
        entity_keys(table.column(entity), entity, key_type),
        {f.name: value_bytes(table.column(f.name), f.dtype.to_value_type()) for f in view.features},
        event_micros(table.column(view.batch_source.timestamp_field), view.batch_source.timestamp_field),
    )
