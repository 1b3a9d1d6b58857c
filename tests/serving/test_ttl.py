"""A real `kfloop serve` honours each feature view's TTL: an entity whose stored row is older than the TTL at
request time is scored exactly like one missing from the store (default features) and flagged in the
response (V1, V2, gRPC) and in the inference log; the serving clock is the wall clock unless pinned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from kfloop.config.contract import parse_duration
from kfloop.config.features import AS_OF_OFFSET
from kfloop.errors import ConfigError
from kfloop.serving.client import ServingClient, v2_inputs
from kfloop.serving.clock import AS_OF_ENV, serving_clock
from kfloop.serving.inference_log import read_inference_log
from kfloop.serving.protocol import request_specs
from tests.feature_repo.harness import CUSTOMERS
from tests.serving.conftest import Server, Trained

pytestmark = pytest.mark.slow


def _request_row(trained: Trained, customer: str) -> dict:
    """The customer's newest transaction as an application sends it."""
    frame = trained.frame[trained.frame["customer_id"] == customer].sort_values("event_timestamp")
    cols = list(dict.fromkeys([*trained.config.source.entity_keys, *trained.config.features.request_features]))
    return {k: (None if pd.isna(v) else v) for k, v in frame[cols].iloc[-1].to_dict().items()}


def test_a_row_older_than_its_ttl_is_scored_as_missing_and_flagged(
    trained: Trained, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    newest = trained.loop.latest_offline(CUSTOMERS)["event_timestamp"].sort_values()
    stale, fresh = newest.index[0], list(newest.index[-3:])
    # the stalest customer's row is 1 µs past what the point-in-time join would still join at this instant
    as_of = (newest.iloc[0] + parse_duration(trained.loop.spec(CUSTOMERS).ttl) + 2 * AS_OF_OFFSET).to_pydatetime()
    assert newest.iloc[1] > newest.iloc[0] + AS_OF_OFFSET, "the next customer's row must stay fresh"
    server = start_server(trained.write_config(tmp_path / "kfloop.json"), env={AS_OF_ENV: as_of.isoformat()})

    rows = [_request_row(trained, stale), {**_request_row(trained, stale), "customer_id": "c-never-seen"}]
    rows += [_request_row(trained, c) for c in fresh]
    expected = [True, True, False, False, False]
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    for protocol in ("v1", "v2", "grpc"):
        preds = client.predict(rows, protocol)["predictions"]
        assert [p["defaulted"] for p in preds] == expected, protocol
        assert preds[0]["score"] == pytest.approx(preds[1]["score"], abs=1e-6), "expired = unknown entity"
    name = trained.config.training.model_name
    body = {"id": "ttl-expired", "inputs": v2_inputs(rows, request_specs(trained.config))}
    assert httpx.post(f"{server.url}/v2/models/{name}/infer", json=body).status_code == 200

    assert server.stop() is not None
    logged = [
        r
        for r in read_inference_log(trained.loop.storage, trained.config).to_pylist()
        if r["request_id"] == "ttl-expired"
    ]
    assert [(r["customer_id"], r["defaulted"]) for r in logged] == [
        (r["customer_id"], d) for r, d in zip(rows, expected, strict=True)
    ]


def test_the_wall_clock_is_the_default(trained: Trained, start_server: Callable[..., Server], tmp_path: Path) -> None:
    """Unpinned, the demo's months-old rows are all past their ttls (the data ends before 2026-04-02)."""
    assert datetime.now(UTC) > trained.frame["event_timestamp"].max() + pd.Timedelta(days=61)
    server = start_server(trained.write_config(tmp_path / "kfloop.json"), env={AS_OF_ENV: ""})
    client = ServingClient.for_config(trained.config, server.url, server.grpc_target)
    preds = client.predict(trained.request_rows(5), "v2")["predictions"]
    assert all(p["defaulted"] for p in preds)


def test_a_pinned_clock_is_an_iso_time_with_an_offset() -> None:
    assert serving_clock({AS_OF_ENV: "2026-04-01T02:00:00+02:00"})() == datetime(2026, 4, 1, tzinfo=UTC)
    assert abs((serving_clock({})() - datetime.now(UTC)).total_seconds()) < 5
    with pytest.raises(ConfigError, match=f"{AS_OF_ENV}='2026-04-01T00:00:00' has no UTC offset"):
        serving_clock({AS_OF_ENV: "2026-04-01T00:00:00"})
    with pytest.raises(ConfigError, match=f"{AS_OF_ENV}='yesterday' is not an ISO-8601 time"):
        serving_clock({AS_OF_ENV: "yesterday"})
