"""Row hashes from Arrow buffers: a value hashes alike wherever it sits (batch, slice, chunk, string width), distinct
values apart, against Python's own equality of the values as the reference."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from kfloop.contract.arrow_hash import column_hashes, row_hashes

STRINGS = ["", "a", "abcdefgh", "abcdefghi", "abcdefgh\x00", "\x00", None, "tx-000000000001", "ü" * 20, "é", "e\u0301"]
FLOATS = [0.0, -0.0, math.nan, -math.nan, 1.0, None, math.inf, -1.5, 1e-300]
INTS = [0, 1, -1, None, 2**62, -(2**63), 7]


def canonical(value: object) -> object:
    """What "the same value" means for duplicates: -0.0 is 0.0, every NaN is one NaN."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value + 0.0
    return value


@pytest.mark.parametrize(
    ("values", "typ"),
    [(STRINGS, pa.string()), (STRINGS, pa.large_string()), (FLOATS, pa.float64()), (INTS, pa.int64())],
)
def test_equal_values_hash_equal_and_distinct_values_apart(values: list, typ: pa.DataType) -> None:
    h = column_hashes(pa.array(values, typ))
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            same = (a is None) == (b is None) and canonical(a) == canonical(b)
            assert (h[i] == h[j]) == same, (a, b)


def test_a_value_hashes_alike_in_any_slice_chunking_or_string_width() -> None:
    arr = pa.array(STRINGS, pa.string())
    whole = column_hashes(arr)
    for i in range(len(arr)):
        for j in range(i, len(arr) + 1):
            assert (column_hashes(arr.slice(i, j - i)) == whole[i:j]).all(), (i, j)
    chunked = pa.chunked_array([arr.slice(0, 3), arr.slice(3)])
    assert (column_hashes(chunked) == whole).all()
    assert (column_hashes(arr.cast(pa.large_string())) == whole).all()
    assert (column_hashes(pa.array(["", ""], pa.string())) == column_hashes(arr)[0]).all()  # a batch of empties


def test_timestamps_bools_and_all_null_columns() -> None:
    ts = pa.array([0, 1, None, 0], pa.timestamp("us", tz="UTC"))
    h = column_hashes(ts)
    assert h[0] == h[3] and len({h[0], h[1], h[2]}) == 3
    b = column_hashes(pa.array([True, False, None, True]))
    assert b[0] == b[3] and len({b[0], b[1], b[2]}) == 3
    nulls = column_hashes(pa.array([None, None], pa.int64()))
    assert nulls[0] == nulls[1] == column_hashes(pa.array([None], pa.string()))[0]


def test_row_hashes_compare_whole_rows_in_column_order() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    ids = rng.integers(0, 300, n)
    table = pa.table(
        {
            "id": pa.array([f"k-{i}" for i in ids]),
            "amount": pa.array(rng.choice([1.0, 2.5, None], n), pa.float64()),
            "flag": pa.array(rng.choice([0, 1], n), pa.int64()),
        }
    )
    h = row_hashes(table)
    rows = [tuple(r.values()) for r in table.to_pylist()]
    by_hash: dict[int, set] = {}
    for value, row in zip(h.tolist(), rows, strict=True):
        by_hash.setdefault(value, set()).add(row)
    assert all(len(group) == 1 for group in by_hash.values())  # no two different rows share a hash
    assert len(by_hash) == len(set(rows))
    swapped = table.select(["flag", "id", "amount"])
    assert not (row_hashes(swapped) == h).all()
    assert (row_hashes(pa.concat_tables([table.slice(0, 17), table.slice(17)])) == h).all()
