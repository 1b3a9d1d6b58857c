"""Warm-up before readiness: the first request of each protocol, sent by the server itself.

Why: the first call of each path pays one-time costs (FastAPI's route and pydantic validators, KServe's V1
and V2 decoders, the gRPC servicer, the first Feast read, the model's first forward pass): 50-100 ms, which
an application's first requests, and every one-row p99, saw. So the server answers one request per protocol
(V1 REST, V2 REST, gRPC) over its own ports and says "warming up" on ``/v2/health/ready`` until they are
answered. A loaded model version also scores one all-missing row before it is served (:func:`warm_model`),
which covers a version switched in while serving.

Warm-up requests carry :data:`WARMUP_ID` as request id, a random value of this process, so no client can
forge one. They are left out of the inference log and the request metrics: the log holds what clients sent.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
from kserve.logging import logger as log  # our lines land beside the server's

from kfloop.config import Config
from kfloop.serving.protocol import ColumnSpec, request_specs

#: The request id of this process's warm-up requests (random: only the server itself can send one).
WARMUP_ID = f"kfloop-warmup-{secrets.token_hex(8)}"
#: The protocols warmed, in the order a client library would try them.
PROTOCOLS = ("v1", "v2", "grpc")
#: The entity key warm-up requests ask for (absent from any store: its features are the defaults).
WARMUP_ENTITY = "__kfloop_warmup__"


def is_warmup(request_id: object) -> bool:
    """Whether a request id is this process's warm-up id."""
    return request_id == WARMUP_ID


def warmup_row(config: Config, specs: Sequence[ColumnSpec] | None = None) -> dict[str, Any]:
    """One request row the contract accepts: the first allowed value where the contract lists some, else an
    absent entity key, a null where allowed, a number in bounds or an empty string."""
    from kfloop.serving.request_contract import allowed_checks  # it imports the metrics, which import this

    specs = tuple(specs or request_specs(config))
    allowed = {c.column: c.allowed for c in allowed_checks(config, specs)}
    row: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        key = i < len(config.source.entity_keys)  # the keys come first and are never null
        if allowed.get(spec.name):  # a key or field the contract lists values for: the first of them
            first = allowed[spec.name][0]
            row[spec.name] = str(first) if spec.kind == "string" else (int(first) if spec.integer else float(first))
        elif key:
            row[spec.name] = 0 if spec.integer else WARMUP_ENTITY
        elif spec.nullable:
            row[spec.name] = None
        elif spec.kind == "number":
            value = spec.minimum if spec.minimum is not None else (spec.maximum if spec.maximum is not None else 0)
            row[spec.name] = int(value) if spec.integer else float(value)
        else:
            row[spec.name] = ""
    return row


def warm_model(model: Any) -> None:
    """Score one all-missing row with a loaded model (its first forward pass is the slow one). A failure is
    logged, not raised: the version's real requests will say what is wrong."""
    pre = model.preprocessor
    columns = {c: np.array([np.nan]) for c in pre.numeric}
    columns |= {c: np.array([None], dtype=object) for c in pre.categorical}
    try:
        model.score_all(columns, 1)
    except Exception as err:  # a warm-up must never keep a version from serving
        log.warning("model %s: warm-up scoring failed (%s: %s)", model.version, type(err).__name__, err)


class WarmUp:
    """The server's own first requests; ``not_ready_reason`` is "warming up" until they are answered."""

    def __init__(self, config: Config, http_base: str, grpc_target: str, *, timeout: float = 30.0) -> None:
        self.config = config
        self.http_base = http_base
        self.grpc_target = grpc_target
        self.timeout = timeout
        self.done = False
        self.outcome: dict[str, str] = {}  # protocol → "ok" or the answer's error (a refusal still warms the path)

    def not_ready_reason(self) -> str | None:
        return None if self.done else "warming up (the server's own first request of each protocol)"

    async def run(self) -> None:
        """Send one request per protocol once the servers listen; then ready, whatever the answers were."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self._send_all), self.timeout)
        except TimeoutError:
            log.warning("warm-up not answered within %g s: ready without it", self.timeout)
        except Exception as err:
            log.warning("warm-up failed (%s: %s): ready without it", type(err).__name__, err)
        finally:
            self.done = True

    def _send_all(self) -> None:
        import time

        from kfloop.serving.client import ServingClient

        client = ServingClient.for_config(self.config, self.http_base, self.grpc_target)
        row = warmup_row(self.config, client.specs)
        try:
            for protocol in PROTOCOLS:
                for attempt in range(50):  # the servers start listening concurrently with this task
                    try:
                        client.predict([row], protocol, request_id=WARMUP_ID)
                        self.outcome[protocol] = "ok"
                        break
                    except Exception as err:
                        if _refused(err) and attempt < 49:
                            time.sleep(0.1)
                            continue
                        self.outcome[protocol] = f"{type(err).__name__}: {err}"
                        break
        finally:
            client.close()
        log.info("warm-up: %s", ", ".join(f"{p} {o}" for p, o in self.outcome.items()))


def _refused(err: BaseException) -> bool:
    """A connection the server does not accept yet (it is still binding its ports)."""
    import grpc
    import httpx

    if isinstance(err, httpx.ConnectError):
        return True
    code = getattr(err, "status", None)
    return code == grpc.StatusCode.UNAVAILABLE.name
