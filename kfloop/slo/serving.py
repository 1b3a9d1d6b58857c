"""The serving indicators from the workspace: the request samples every serving process records each minute
(:mod:`kfloop.serving.request_samples`, from the same ``kfloop_requests_total`` and ``kfloop_request_seconds``
counters Prometheus scrapes), added up over the minutes ``m`` of the window with ``start <= m < end``:

- ``serving_availability``: good = requests without a server error (the statuses of
  :data:`~kfloop.monitoring.alert_rules.ERROR_STATUS` are bad, as on Prometheus), total = requests;
- ``serving_latency``: good = requests in the histogram bucket ``le = slo.serving_latency.threshold_seconds``,
  total = every timed request (the ``+Inf`` bucket): exact, the threshold being a bucket bound.

A process's last minute is recorded when it stops, so a minute still running counts what was recorded of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from kfloop.config import Config
from kfloop.layout import request_samples_prefix
from kfloop.slo.status import Count
from kfloop.storage import Storage

if TYPE_CHECKING:
    from kfloop.serving.request_samples import RequestSample

__all__ = ["serving_counts", "summed"]

SOURCE_NOTE = "the serving processes' request samples"


def summed(samples: Sequence[RequestSample], threshold: float) -> tuple[int, int, int, int, int]:
    """(requests, server errors, timed requests, timed within ``threshold``, of those judged at a lower bound
    because their sample lacks the threshold's bucket) over ``samples``."""
    from kfloop.serving.request_samples import INF

    requests = errors = timed = fast = inexact = 0
    for s in samples:
        requests += s.requests
        errors += s.errors
        within, exact = s.within(threshold)
        timed += s.buckets.get(INF, 0)
        fast += within
        if not exact:
            inexact += s.buckets.get(INF, 0)
    return requests, errors, timed, fast, inexact


def serving_counts(config: Config, storage: Storage, start: datetime, end: datetime) -> dict[str, Count]:
    """``serving_availability`` and ``serving_latency`` of ``training.model_name`` over ``[start, end)`` (see the
    module doc); total 0 and a detail saying why when no serving process recorded a request."""
    from kfloop.monitoring.alert_rules import ERROR_STATUS
    from kfloop.serving.request_samples import read_request_samples

    model = config.training.model_name
    threshold = config.slo.serving_latency.threshold_seconds
    where = f"[{request_samples_prefix(model)}/]"
    samples = read_request_samples(storage, model, start, end)
    if not samples:
        none = Count(
            0,
            0,
            f"no request of model {model!r} recorded in the window: no `kfloop serve` or transformer answered one "
            f"(each records its requests every minute and when it stops) {where}",
        )
        return {"serving_availability": none, "serving_latency": none}
    requests, errors, timed, fast, inexact = summed(samples, threshold)
    latency = f"{timed:,} requests, {timed - fast:,} slower than {threshold:g}s"
    if inexact:
        latency += f" ({inexact:,} recorded without a {threshold:g}s bucket, judged at a lower bound)"
    return {
        "serving_availability": Count(
            requests - errors,
            requests,
            f"{requests:,} requests, {errors:,} server errors (status {ERROR_STATUS}), from {SOURCE_NOTE} {where}",
        ),
        "serving_latency": Count(fast, timed, f"{latency}, from {SOURCE_NOTE} {where}"),
    }
