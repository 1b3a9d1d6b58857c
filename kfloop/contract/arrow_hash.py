"""64-bit hashes of Arrow rows, straight from the column buffers: what duplicate detection compares.

Why not :mod:`kfloop.row_hash` (pandas' ``hash_pandas_object``): it turns every string into a Python object and
hashes it with SipHash, the largest cost of validating a million rows. Here a string's bytes are read from the
Arrow data buffer eight at a time (one gather per 8-byte word, however many rows) and mixed with the SplitMix64
finalizer, a bijection, so two values of one column collide only by chance (2⁻⁶⁴). The values differ from
:mod:`kfloop.row_hash`'s: compare hashes made here only with each other (one validate run).

A value hashes the same in every batch (nothing depends on the batch's other rows), nulls hash apart from every
value, ``0.0`` equals ``-0.0`` and every NaN equals every other NaN (an exact duplicate is the same value).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1, _M2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_ROW = _U64(0xD6E8FEB86659FD93)  # odd: multiplying the running row hash by it is a bijection
_NULL = _U64(0x5851F42D4C957F2D)  # what a null hashes to, in every column
#: Low-byte masks: a word's first k bytes (little endian), k = 0 … 8.
_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=_U64)
#: One seed per kind of value, so 1 (int) and 1.0 (float) or "" and 0 do not hash alike by construction.
_SEED = {
    kind: _U64(seed)
    for kind, seed in {
        "int": 0x243F6A8885A308D3,
        "float": 0x13198A2E03707344,
        "bool": 0xA4093822299F31D0,
        "string": 0x082EFA98EC4E6C89,
        "other": 0x452821E638D01377,
    }.items()
}


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, in place (uint64 arithmetic wraps)."""
    h ^= h >> _U64(30)
    h *= _M1
    h ^= h >> _U64(27)
    h *= _M2
    h ^= h >> _U64(31)
    return h


def _fixed(arr: pa.Array, width: int) -> np.ndarray:
    """The values buffer of a fixed-width array as unsigned integers (null slots hold whatever is there)."""
    if arr.buffers()[1] is None:  # all null
        return np.zeros(len(arr), _U64)
    values = np.frombuffer(arr.buffers()[1], dtype=np.dtype(f"<u{width // 8}"))
    return values[arr.offset : arr.offset + len(arr)].astype(_U64)


def _floats(arr: pa.Array) -> np.ndarray:
    if arr.buffers()[1] is None:  # all null
        return np.zeros(len(arr), _U64)
    values = np.frombuffer(arr.buffers()[1], dtype=np.dtype(f"<f{arr.type.bit_width // 8}"))
    values = values[arr.offset : arr.offset + len(arr)].astype(np.float64)
    values[values == 0.0] = 0.0  # -0.0 is the same value
    values[np.isnan(values)] = np.nan  # one NaN
    return values.view(_U64).copy()


def _strings(arr: pa.Array) -> np.ndarray:
    """Length, then each 8-byte word in turn (zero-padded): a string's words are gathered from the data buffer
    by unaligned 8-byte reads, one numpy gather per word position."""
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = arr.buffers()[2]
    padded = np.zeros(hi - lo + 8, dtype=np.uint8)
    if hi > lo:
        padded[: hi - lo] = np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo)
    words = np.ndarray((hi - lo + 1,), dtype="<u8", buffer=padded, strides=(1,))  # a word at every byte
    starts, lengths = offsets[:-1] - lo, np.diff(offsets)
    h = _mix(lengths.astype(_U64) ^ _SEED["string"])
    longest = int(lengths.max()) if len(lengths) else 0
    for j in range(0, max(longest, 1), 8):  # word 0 always, so a batch of empty strings hashes alike
        longer = lengths > j
        rows = None if not j or longer.all() else np.flatnonzero(longer)  # every row has word 0 ("" has 0)
        at, left = (starts + j, lengths - j) if rows is None else (starts[rows] + j, lengths[rows] - j)
        word = words[at] & _BYTES[np.minimum(left, 8)]
        if rows is None:
            h = _mix(h ^ _mix(word + _GOLDEN))
        else:
            h[rows] = _mix(h[rows] ^ _mix(word + _GOLDEN))
    return h


def _values(arr: pa.Array) -> np.ndarray:
    """One uint64 per value, before the null marker."""
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _strings(arr)
    if pa.types.is_floating(t):
        return _mix(_floats(arr) ^ _SEED["float"])
    if pa.types.is_boolean(t):
        return _mix(np.asarray(pc.fill_null(arr, False), dtype=_U64) ^ _SEED["bool"])
    if (pa.types.is_integer(t) or pa.types.is_temporal(t)) and t.bit_width in (8, 16, 32, 64):
        return _mix(_fixed(arr, t.bit_width) ^ _SEED["int"])
    # any other type (never in a lake: kfloop.schema.ARROW_TYPES): pandas' SipHash of the Python values
    objects = np.asarray(arr.to_pylist(), dtype=object)
    return _mix(pd.util.hash_array(objects, categorize=False).astype(_U64) ^ _SEED["other"])


def column_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per value of ``column``; nulls hash to one constant of their own."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.empty(0, _U64)
    h = _values(arr)
    if arr.null_count:
        h[np.asarray(arr.is_null())] = _NULL
    return h


def row_hashes(table: pa.Table) -> np.ndarray:
    """One uint64 per row over all of ``table``'s columns, in order."""
    h = np.zeros(table.num_rows, dtype=_U64)
    for column in table.columns:
        h = _mix(h * _ROW ^ column_hashes(column))
    return h
