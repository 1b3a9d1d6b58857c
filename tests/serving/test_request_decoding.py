"""Request decoding against the request columns: an int64 column takes whole numbers only (7 or 7.0), so a
7.5 is the client's 400 naming the field, not a code silently scored as unknown and then lost from the log."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from kfloop.errors import RequestError
from kfloop.serving.protocol import ColumnSpec, decode

SPECS = (ColumnSpec("hour", "number", integer=True), ColumnSpec("amount", "number"))


def test_whole_numbers_pass_for_an_int64_column_over_v1_and_v2() -> None:
    columns, n = decode({"instances": [{"hour": 7, "amount": 1.5}, {"hour": 8.0, "amount": 2}]}, SPECS, 10)
    assert n == 2 and columns["hour"].tolist() == [7.0, 8.0]
    request = InferRequest("m", [InferInput("hour", [1], "FP64", [9.0]), InferInput("amount", [1], "FP64", [0.5])])
    assert decode(request, SPECS, 10)[0]["hour"].tolist() == [9.0]


def test_a_fraction_for_an_int64_column_is_a_400_naming_the_field() -> None:
    with pytest.raises(RequestError, match=r"instances\[1\]\.hour: 7\.5 is not a whole number"):
        decode({"instances": [{"hour": 7, "amount": 1}, {"hour": 7.5, "amount": 1}]}, SPECS, 10)
    request = InferRequest(
        "m", [InferInput("hour", [2], "FP64", [1.0, 2.25]), InferInput("amount", [2], "FP64", [0, 0])]
    )
    with pytest.raises(RequestError, match=r"input 'hour'\[1\]: 2\.25 is not a whole number"):
        decode(request, SPECS, 10)
    # a float column takes fractions, and a missing int64 value stays missing
    columns, _ = decode({"instances": [{"hour": None, "amount": 0.25}]}, SPECS, 10)
    assert np.isnan(columns["hour"][0]) and columns["amount"].tolist() == [0.25]
