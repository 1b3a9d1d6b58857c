"""`kfloop predict` reads rows the ways the README shows: one object (over several lines), an array, JSON Lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfloop.cli.serve_cmd import _rows
from kfloop.errors import PredictError

ROW = '{"customer_id": "c-1",\n  "amount": 53.4}'


def test_one_object_may_span_lines() -> None:
    assert _rows(ROW, None) == [{"customer_id": "c-1", "amount": 53.4}]


def test_an_array_of_objects() -> None:
    assert _rows(f"[{ROW}, {ROW}]", None) == [{"customer_id": "c-1", "amount": 53.4}] * 2


def test_json_lines_from_a_file(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert _rows("", rows) == [{"a": 1}, {"a": 2}]


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(PredictError, match=r"rows\.jsonl: not JSON rows"):
        _rows("", rows)
