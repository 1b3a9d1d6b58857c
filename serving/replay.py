"""Replaying recorded requests to a running server: in batches over V2 REST, as an application would send
them, and waiting until the inference log holds them (a drift check reads the log, not the responses)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kfloop.config import Config
from kfloop.errors import KfloopError
from kfloop.serving.client import ServingClient
from kfloop.storage import Storage


@dataclass
class Replayed:
    """What the server answered: rows scored, by model version, flagged (label 1) and defaulted."""

    rows: int = 0
    requests: int = 0
    versions: Counter = field(default_factory=Counter)
    flagged: int = 0
    defaulted: int = 0


def request_rows(config: Config, frame: Any) -> list[dict[str, Any]]:
    """Rows of a data frame as an application sends them: the request columns, nulls as None."""
    part = frame[config.request_columns()].astype(object)
    return part.where(part.notna(), None).to_dict("records")


def replay(client: ServingClient, rows: Sequence[dict[str, Any]], batch_rows: int = 200) -> Replayed:
    """Send ``rows`` in batches of ``batch_rows`` (V2 REST); a server error raises (nothing is retried)."""
    out = Replayed()
    for i in range(0, len(rows), batch_rows):
        answer = client.predict(rows[i : i + batch_rows], "v2")
        predictions = answer["predictions"]
        out.rows += len(predictions)
        out.requests += 1
        out.versions[str(answer["model_version"])] += len(predictions)
        out.flagged += sum(1 for p in predictions if p.get("label") == 1)
        out.defaulted += sum(1 for p in predictions if p.get("defaulted"))
    return out


def logged_rows(config: Config, storage: Storage) -> int:
    """Rows in the inference log now (0 when logging is off)."""
    if not config.serving.inference_log.enabled:
        return 0
    from kfloop.serving.inference_log import read_inference_log

    return read_inference_log(storage, config).num_rows


def wait_logged(config: Config, storage: Storage, rows: int, timeout: float = 60.0) -> int:
    """Wait until the log holds at least ``rows`` rows (the server flushes every
    ``serving.inference_log.flush_seconds``); returns the count, raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (have := logged_rows(config, storage)) < rows:
        if time.monotonic() > deadline:
            raise KfloopError(f"the inference log has {have:,} rows after {timeout:.0f} s, expected {rows:,}")
        time.sleep(0.5)
    return have


def wait_serving(client: ServingClient, row: dict[str, Any], version: str, timeout: float = 60.0) -> float:
    """Wait until the server scores with ``version`` (its champion watch hot-switches within
    ``serving.reload_seconds``); returns the seconds waited. The probe's one row is scored and logged."""
    started = time.monotonic()
    while True:
        served = str(client.predict([row], "v2")["model_version"])
        if served == version:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise KfloopError(f"the server still scores with {served} {timeout:.0f} s after {version} was promoted")
        time.sleep(0.5)
