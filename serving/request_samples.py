"""The serving process's requests per minute, recorded in the workspace: the events of the serving SLOs when
there is no Prometheus (``kfloop slo status`` on a laptop, or a cluster without one).

The request path does no extra work: every request is already counted by the process's Prometheus metrics
(``kfloop_requests_total{model, protocol, status}`` and the ``kfloop_request_seconds`` histogram,
:mod:`kfloop.serving.metrics`). Once a minute (and at shutdown, for the last partial minute) a
:class:`RequestSampler` reads them from the process's own registry, takes the increase since its previous read
and adds it to the wall-clock minute that read was taken in, per model:

- ``requests``: the increase of ``kfloop_requests_total`` (every status);
- ``errors``: of them, the statuses that count against availability, matched exactly as the Prometheus SLO query
  and the alert rules match them (:data:`~kfloop.monitoring.alert_rules.ERROR_STATUS`, anchored like PromQL's
  ``=~``);
- ``buckets``: the cumulative request-time histogram, ``le`` → requests at or below it (``+Inf``: every timed
  request), so "requests within ``slo.serving_latency.threshold_seconds``" is exact for any bucket bound.

Samples are stored as the freshness samples are: one object per writer and hour
(:func:`kfloop.layout.request_samples_key`), the writer being this process (the replica's host name, its pid
and start time: a restarted replica counts from zero again, so its objects must not replace the earlier
process's). Each write carries the process's whole hour as it knows it, so a retried write is idempotent;
readers add the writers' counts up (:func:`read_request_samples`). A failed write is logged and retried at the
next minute; nothing here can fail or slow a request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from kfloop.errors import StorageError
from kfloop.layout import request_samples_key, request_samples_prefix
from kfloop.minute_samples import hour_bodies, hour_of, minute_of
from kfloop.monitoring import metric_names as names
from kfloop.monitoring.alert_rules import ERROR_STATUS
from kfloop.storage import Storage

__all__ = ["INF", "RequestSample", "RequestSampler", "is_server_error", "read_request_samples", "writer_name"]

_MINUTE = timedelta(minutes=1)
#: The bucket of every timed request (a histogram's ``_count``).
INF = "+Inf"
#: How long after a minute's start the sampler reads the metrics (an early wake-up must not read twice).
TICK_DELAY_SECONDS = 0.05
_BUCKET = f"{names.REQUEST_SECONDS}_bucket"
_SERVER_ERROR = re.compile(ERROR_STATUS)

_Snapshot = dict[tuple[str, str], float]  # (model, status) → requests, or (model, le) → requests at or below


def is_server_error(status: str) -> bool:
    """Whether a request's status counts against availability (the whole status matches ``ERROR_STATUS``, as
    PromQL's anchored ``=~`` does): REST 5xx and the gRPC codes of the server's own failures."""
    return _SERVER_ERROR.fullmatch(status) is not None


def writer_name(started: datetime) -> str:
    """This serving process's name among the writers: the replica (host name, a pod's name on Kubernetes),
    then the pid and start time, so a restarted replica's counts never replace the earlier process's."""
    return f"{socket.gethostname()}-{os.getpid()}-{started.astimezone(UTC):%Y%m%dT%H%M%S}"


@dataclass
class RequestSample:
    """One model's requests in one wall-clock minute (one writer's, or every writer's added up)."""

    model: str
    minute: datetime  # UTC, start of the minute
    requests: int = 0  # kfloop_requests_total's increase, every status
    errors: int = 0  # of them, failed by the server (is_server_error)
    buckets: dict[str, int] = field(default_factory=dict)  # le → timed requests at or below it; INF: all of them

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "minute": self.minute.isoformat(),
            "requests": self.requests,
            "errors": self.errors,
            "buckets": self.buckets,
        }

    @staticmethod
    def from_json(body: dict) -> RequestSample:
        return RequestSample(
            str(body["model"]),
            datetime.fromisoformat(body["minute"]).astimezone(UTC),
            int(body["requests"]),
            int(body["errors"]),
            {str(le): int(n) for le, n in body["buckets"].items()},
        )

    def within(self, threshold: float) -> tuple[int, bool]:
        """(timed requests within ``threshold`` seconds, whether that is exact): the count of its bucket, or
        when the sample has no such bound (recorded with other buckets) that of the largest bound below it,
        never more than the truth."""
        bounds = {float(le): n for le, n in self.buckets.items() if le != INF}
        if threshold in bounds:
            return bounds[threshold], True
        below = [b for b in bounds if b < threshold]
        return (bounds[max(below)] if below else 0), False

    def add(self, other: RequestSample) -> None:
        """Add another writer's counts of the same minute. A bound only some writers have is dropped: the
        sum at it would be short (``within`` falls back to a bound all of them have)."""
        self.requests += other.requests
        self.errors += other.errors
        self.buckets = {le: n + other.buckets[le] for le, n in self.buckets.items() if le in other.buckets}


class RequestSampler:
    """Reads the process's request metrics each minute and stores the increase per model and minute (see the
    module doc). ``models``: the models recorded (the ones the SLO is about: the predictor served beside the
    transformer by ``kfloop serve``, and a URL naming no served model, are left out)."""

    def __init__(
        self,
        storage: Storage,
        models: Iterable[str],
        *,
        registry: CollectorRegistry | Collector = REGISTRY,
        writer: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: logging.Logger | None = None,
    ) -> None:
        self.storage = storage
        self.models = frozenset(models)
        self.clock = clock
        self.log = log or logging.getLogger(__name__)
        # the process's registry, or a collector of several processes' (the workers of one `kfloop serve`)
        wanted = [names.REQUESTS_TOTAL, _BUCKET]
        self._source = registry.restricted_registry(wanted) if isinstance(registry, CollectorRegistry) else registry
        self._lock = threading.Lock()  # a tick in a worker thread and the shutdown's final tick
        self._last = self._read()  # counted before the sampler started: not this process's minutes to report
        self._last_at = clock()
        self.writer = writer or writer_name(self._last_at)
        self._hours: dict[tuple[str, str], dict[datetime, RequestSample]] = {}  # (model, hour) → its minutes
        self._unwritten: set[tuple[str, str]] = set()  # (model, hour) changed since its last successful write
        self._closed = False

    def _read(self) -> tuple[_Snapshot, _Snapshot]:
        """(requests by model and status, timed requests by model and bucket bound), summed over protocols."""
        requests: _Snapshot = {}
        buckets: _Snapshot = {}
        for family in self._source.collect():
            for s in family.samples:
                model = s.labels.get("model", "")
                if model not in self.models:
                    continue
                if s.name == names.REQUESTS_TOTAL:
                    key = (model, s.labels["status"])
                    requests[key] = requests.get(key, 0.0) + s.value
                elif s.name == _BUCKET:
                    key = (model, s.labels["le"])
                    buckets[key] = buckets.get(key, 0.0) + s.value
        return requests, buckets

    def tick(self, now: datetime | None = None) -> None:
        """Add the requests counted since the previous tick to that tick's minute, then write every hour object
        changed and not yet written (also those a failed write left). A write error is logged, not raised."""
        with self._lock:
            self._count(now or self.clock())
            self._write()

    def close(self) -> None:
        """The last tick (the minute still running), once; at shutdown, after the last request was answered."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._count(self.clock())
                self._write()
            except Exception:  # the server is stopping: say so, never keep it from stopping
                self.log.exception("request samples: the last minute could not be recorded")

    def _count(self, now: datetime) -> None:
        requests, buckets = self._read()
        minute = minute_of(self._last_at)
        before_requests, before_buckets = self._last
        for model in self.models:
            sample = RequestSample(model, minute)
            for (m, status), n in requests.items():
                if m == model:
                    d = _increase(n, before_requests.get((m, status), 0.0))
                    sample.requests += d
                    sample.errors += d if is_server_error(status) else 0
            for (m, le), n in buckets.items():
                if m == model:
                    sample.buckets[le] = _increase(n, before_buckets.get((m, le), 0.0))
            if sample.requests or sample.buckets.get(INF):
                slot = (model, hour_of(minute))
                minutes = self._hours.setdefault(slot, {})
                old = minutes.setdefault(minute, RequestSample(model, minute))
                old.requests += sample.requests
                old.errors += sample.errors
                for le, n in sample.buckets.items():
                    old.buckets[le] = old.buckets.get(le, 0) + n
                self._unwritten.add(slot)
        self._last, self._last_at = (requests, buckets), now

    def _write(self) -> None:
        for slot in sorted(self._unwritten):
            model, hour = slot
            minutes = self._hours[slot]
            body = json.dumps([minutes[m].to_json() for m in sorted(minutes)])
            try:
                self.storage.write_text(request_samples_key(model, hour, self.writer), body)
            except Exception:  # the storage may be down for a while: keep the counts, try again next minute
                self.log.exception("cannot write the request samples of %s %s (retried next minute)", model, hour)
                continue
            self._unwritten.discard(slot)
        # an hour before the next tick's minute gets no more counts: once written, it leaves memory
        current = hour_of(minute_of(self._last_at))
        for slot in [s for s in self._hours if s[1] < current and s not in self._unwritten]:
            del self._hours[slot]

    async def run(self) -> None:
        """Tick just after every wall-clock minute starts, in a worker thread (storage I/O stays off the event
        loop), until cancelled; ``close`` takes the last partial minute."""
        while True:
            now = self.clock()
            await asyncio.sleep((minute_of(now) + _MINUTE - now).total_seconds() + TICK_DELAY_SECONDS)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                self.log.exception("request samples: tick failed (retried next minute)")


def _increase(now: float, before: float) -> int:
    """A counter's increase (the whole value after a reset, as Prometheus' ``increase`` reads one)."""
    return round(now - before if now >= before else now)


def read_request_samples(storage: Storage, model: str, start: datetime, end: datetime) -> list[RequestSample]:
    """The model's samples with ``start <= minute < end``, one per minute (the writers' counts added up),
    oldest first."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    prefix = request_samples_prefix(model)
    by_minute: dict[datetime, RequestSample] = {}
    for key, bodies in hour_bodies(storage, prefix, start, end, "request samples"):
        try:
            samples = [RequestSample.from_json(b) for b in bodies]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise StorageError(
                f"{storage.uri(key)}: not a list of request samples ({type(err).__name__}: {err}); a serving "
                "process writes these, delete the object if something else did"
            ) from err
        for s in samples:
            if start <= s.minute < end:
                if s.minute in by_minute:
                    by_minute[s.minute].add(s)
                else:
                    by_minute[s.minute] = s
    return [by_minute[m] for m in sorted(by_minute)]
