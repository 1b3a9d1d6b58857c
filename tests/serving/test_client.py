"""The serving client's request building: a value a typed gRPC tensor cannot carry is refused before sending,
naming the input and the row as the server does for V2 REST (it used to be a bare ValueError)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kfloop.errors import RequestError
from kfloop.serving.client import grpc_request
from kfloop.serving.protocol import ColumnSpec

SPECS = (ColumnSpec("customer_id", "string", nullable=False), ColumnSpec("amount", "number"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "input 'amount'[1]: expected a number, got str 'lots'"),
        ("12.5", "input 'amount'[1]: expected a number, got str '12.5'"),  # V2 REST refuses it too
        (True, "input 'amount'[1]: expected a number, got bool True"),
        ([1], "input 'amount'[1]: expected a number, got list [1]"),
        (10**400, "input 'amount'[1]: " + str(10**400) + " is too large for a number"),
    ],
    ids=["word", "numeric-string", "bool", "list", "huge"],
)
def test_a_value_an_fp64_tensor_cannot_carry_names_the_input_and_row(value: object, message: str) -> None:
    rows = [{"customer_id": "c-1", "amount": 1.0}, {"customer_id": "c-2", "amount": value}]
    with pytest.raises(RequestError) as err:
        grpc_request("fraud", rows, SPECS)
    assert str(err.value) == message


def test_numbers_of_any_kind_and_nulls_are_carried() -> None:
    rows = [{"customer_id": "c", "amount": v} for v in (1, 2.5, np.int64(3), np.float32(4.5), None, math.inf)]
    request = grpc_request("fraud", rows, SPECS)
    values = list(request.inputs[1].contents.fp64_contents)
    assert values[:4] == [1.0, 2.5, 3.0, 4.5] and math.isnan(values[4])
    assert values[5] == math.inf  # sent: refusing it is the server's call (INVALID_ARGUMENT, named)
