"""Warm-up: the server's own first request of each protocol is one the contract accepts, is answered before
readiness, and stays out of what clients are counted and logged by (only this process's id does)."""

from __future__ import annotations

import pytest

from kfloop.config import load_config
from kfloop.serving import protocol
from kfloop.serving.request_contract import CategoryGuard
from kfloop.serving.warmup import WARMUP_ID, is_warmup, warmup_row
from tests.conftest import REPO


@pytest.mark.parametrize("example", ["fraud", "flights"])
def test_the_warmup_row_passes_the_request_contract(example: str) -> None:
    loaded = load_config(REPO / "examples" / example / "kfloop.yaml")
    strict = loaded.serving.model_copy(update={"unknown_category": "reject"})  # a value outside `allowed`: a 400
    config = loaded.model_copy(update={"serving": strict})
    specs = protocol.request_specs(config)
    row = warmup_row(config, specs)
    assert list(row) == [s.name for s in specs]
    columns, n = protocol.decode({"instances": [row]}, specs, 10)
    assert n == 1
    CategoryGuard(config, specs).violations(columns, n, "v1")  # raises on a value outside `allowed`


def test_only_this_process_id_is_a_warmup() -> None:
    assert is_warmup(WARMUP_ID)
    assert not is_warmup("kfloop-warmup-0000000000000000")  # a client cannot keep its requests out of the log
    assert not is_warmup(None)
