"""``kfloop stream run``: read events, update the online features, archive the records, acknowledge them.

One loop, one batch at a time (at most ``stream.batch_size`` records, waiting up to ``stream.poll``):

1. check the records as ingest and validate would (:mod:`kfloop.stream.events`);
2. per feature view, merge them into the touched entities' histories and running windows and take their newest
   rows (:mod:`kfloop.stream.engine`, the batch engine's semantics); write those rows through Feast's online store
   interface, then the histories' changes, atomically against other workers of the group
   (:mod:`kfloop.stream.state`);
3. measure each applied event's lag from its event time to that write (Prometheus histogram, minute samples
   in the workspace: :mod:`kfloop.feature_repo.freshness`);
4. every ``stream.archive_every`` (or ``archive_rows`` records, or on stop) ingest every record read since into
   the raw lake (:mod:`kfloop.stream.archive`) in a background thread while the next batches are applied, then
   acknowledge exactly those records.

A worker killed anywhere re-reads its unacknowledged records on restart (or another worker claims them); the
event ids make a second delivery change nothing, and ingest skips rows the lake already holds. SIGTERM finishes
the batch, archives and acknowledges, then exits.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from feast import FeatureStore
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kfloop import lake
from kfloop.components.materialize import apply_objects, write_online
from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.feature_repo.freshness import LagRecorder, lag_seconds, record_samples
from kfloop.feature_repo.store import open_store
from kfloop.late_rows import LakeRows
from kfloop.lineage.run import preload as preload_lineage
from kfloop.monitoring import metric_names as names
from kfloop.schema import arrow_schema
from kfloop.storage import Storage
from kfloop.stream.archive import archive
from kfloop.stream.engine import Update, Windows, entity_field
from kfloop.stream.events import Message, RecordChecker
from kfloop.stream.sources import EventSource, consumer_name
from kfloop.stream.state import Changes, RedisHistories

log = logging.getLogger(__name__)

#: Lag histogram buckets (seconds): sub-second pushes up to a day-late event.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


@dataclass
class StreamStats:
    """What a worker did (``kfloop stream run`` prints it when it stops)."""

    records: int = 0
    applied: dict[str, int] = field(default_factory=dict)  # view → events that changed a history
    written: dict[str, int] = field(default_factory=dict)  # view → online rows written
    skipped: dict[str, int] = field(default_factory=dict)  # reason kind → records not counted online
    archived: int = 0  # records ingested into the lake
    archives: int = 0
    lag_p99: dict[str, float] = field(default_factory=dict)  # view → p99 lag of the last batch


class StreamMetrics:
    """The worker's Prometheus metrics, in a registry of its own."""

    def __init__(self, project: str) -> None:
        self.registry = CollectorRegistry()
        self.project = project
        self.lag = Histogram(
            names.FEATURE_PUSH_LAG,
            "Seconds from an event's timestamp to its feature values being written online.",
            ["project", "view"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.age = Gauge(
            names.FEATURE_ONLINE_AGE,
            "Seconds since the event time of the newest feature value online (wall clock).",
            ["project", "view"],
            registry=self.registry,
        )
        self.records = Counter(
            names.STREAM_RECORDS,
            "Stream records read, by outcome (applied, or why a record was not counted online).",
            ["project", "outcome"],
            registry=self.registry,
        )


class StreamWorker:
    """One consumer of the group (see module docstring)."""

    def __init__(
        self,
        config: Config,
        storage: Storage,
        source: EventSource,
        histories: RedisHistories,
        store: FeatureStore,
        *,
        metrics: StreamMetrics | None = None,
        clock=lambda: datetime.now(UTC),
    ) -> None:
        if config.stream is None:
            raise ValueError("config has no stream section")
        self.config, self.storage, self.source, self.histories, self.store = config, storage, source, histories, store
        self.stream = config.stream
        self.windows = [Windows(v, config) for v in config.features.views]
        self.checker = RecordChecker(config)
        self.metrics = metrics or StreamMetrics(config.project)
        self.clock = clock
        self.lags = LagRecorder()
        self.newest: dict[str, datetime] = {}
        self.pending: list[Message] = []  # read, counted online (or left to validate's contract), not archived
        self.refused: list[Message] = []  # read, refused as ingest would refuse them, not archived
        self.stats = StreamStats()
        self.writer = consumer_name()
        self.stop = threading.Event()
        self._seq = 0
        self._last_archive = time.monotonic()
        self._archiving: tuple[threading.Thread, dict[str, object], object, int] | None = None
        preload_lineage()  # the first archive's events would import it mid-stream
        apply_objects(config, storage, store)
        self._feast_views = {w.view.name: store.get_feature_view(w.view.name) for w in self.windows}
        self._refresh()

    def _refresh(self) -> None:
        src = self.config.source
        manifest = lake.read_manifest(self.storage, src.dataset)
        late = (
            LakeRows(self.storage, manifest, arrow_schema(src), src.timestamp_column, src.allowed_lateness)
            if manifest is not None
            else None
        )
        self.checker.refresh(late)

    def process(self, messages: list[Message]) -> None:
        """Steps 1 to 3 for one batch (the records then wait for the next archive)."""
        self.stats.records += len(messages)
        if not messages:
            return
        checked = self.checker.check(messages)
        for i, m in enumerate(messages):
            (self.refused if i in checked.refused else self.pending).append(m)
        for kind, n in checked.skipped.items():
            self.stats.skipped[kind] = self.stats.skipped.get(kind, 0) + n
            self.metrics.records.labels(self.config.project, kind).inc(n)
        for line in checked.examples:
            log.info("not counted online: %s", line)
        if checked.clean.num_rows:
            self.metrics.records.labels(self.config.project, "applied").inc(checked.clean.num_rows)
        seq0, self._seq = self._seq, self._seq + len(messages)
        touched = {w.view.name: w.touched(checked.clean) for w in self.windows}
        updates: dict[str, Update] = {}
        written_at: dict[str, datetime] = {}
        written: dict[str, set[str]] = {w.view.name: set() for w in self.windows}

        def compute() -> Changes:
            """Every view's update, written online. After a conflict it runs again on the newer histories and also
            rewrites every entity an earlier attempt wrote: that write came from an older history and may have
            landed after the other worker's."""
            for w in self.windows:
                name = w.view.name
                updates[name] = w.apply(checked.clean, checked.event_ids, seq0, written[name])
                write_online(self.store, self._feast_views[name], updates[name].rows, w.view.entity)
                written[name] |= {entity_field(e) for e in updates[name].rows.column(w.view.entity).to_pylist()}
                written_at[name] = self.clock()
            return {name: u.changes for name, u in updates.items()}

        self.histories.apply(touched, {w.view.name: w for w in self.windows}, compute)
        for name, update in updates.items():
            self._observe(name, update, written_at[name])

    def _observe(self, name: str, update: Update, written_at: datetime) -> None:
        """Lags of the events a batch applied to ``name``, the newest event online, the counts."""
        if update.rows.num_rows:
            newest = max(update.rows.column("event_timestamp").to_pylist())
            if name not in self.newest or newest > self.newest[name]:
                self.newest[name] = newest
        lags = lag_seconds(update.applied_us, written_at)
        for lag in lags.tolist():
            self.metrics.lag.labels(self.config.project, name).observe(lag)
        self.lags.add(name, lags, self.newest.get(name), written_at)
        self.stats.applied[name] = self.stats.applied.get(name, 0) + len(lags)
        self.stats.written[name] = self.stats.written.get(name, 0) + update.rows.num_rows
        if len(lags):
            self.stats.lag_p99[name] = float(np.percentile(lags, 99))

    def _ages(self) -> None:
        now = self.clock()
        for name, newest in self.newest.items():
            self.metrics.age.labels(self.config.project, name).set(max(0.0, (now - newest).total_seconds()))

    def archive_due(self) -> bool:
        every = parse_duration(self.stream.archive_every).total_seconds()
        return (
            len(self.pending) + len(self.refused) >= self.stream.archive_rows
            or time.monotonic() - self._last_archive >= every
        )

    def _log(self, results: list) -> None:
        for result in results:
            log.info(
                "archived %d records: %d rows written, %d quarantined, %d skipped, %d too late",
                result.rows_read,
                result.rows_written,
                result.rows_quarantined,
                result.rows_skipped,
                result.rows_too_late,
            )

    def _start_archive(self) -> None:
        """Step 4 in the background: ingest the records read so far while the next batches are applied (an
        archive of 100,000 records takes seconds, which would stall every event behind it)."""
        pending, refused, mark = self.pending, self.refused, self.source.mark()
        self.pending, self.refused = [], []
        outcome: dict[str, object] = {}

        def work() -> None:
            try:
                outcome["results"] = archive(self.config, self.storage, pending, refused)
            except BaseException as err:  # handed to the loop, which stops: the records stay unacknowledged
                outcome["error"] = err

        thread = threading.Thread(target=work, name="kfloop-stream-archive", daemon=True)
        thread.start()
        self._archiving = (thread, outcome, mark, len(pending) + len(refused))
        self._last_archive = time.monotonic()

    def _finish_archive(self, wait: bool) -> None:
        """Acknowledge the records of a finished background archive (``wait``: until it finishes)."""
        if self._archiving is None:
            return
        thread, outcome, mark, count = self._archiving
        if wait:
            thread.join()
        elif thread.is_alive():
            return
        self._archiving = None
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        self._log(outcome["results"])  # type: ignore[arg-type]
        self.stats.archived += count
        self.stats.archives += 1
        self.source.commit(mark)
        self._refresh()

    def _store_samples(self) -> None:
        samples = self.lags.closed(None if self.stop.is_set() else self.clock())
        if samples:
            record_samples(self.storage, samples, writer=self.writer)

    def flush(self) -> None:
        """Step 4 now: archive and acknowledge everything read (after any background archive); store the finished
        minutes' freshness samples."""
        self._finish_archive(wait=True)
        if self.pending or self.refused:
            self._start_archive()
            self._finish_archive(wait=True)
        self._last_archive = time.monotonic()
        self._store_samples()

    def run(self, *, until_idle: bool = False, max_records: int | None = None) -> StreamStats:
        """Process batches until stopped (SIGTERM/SIGINT, or ``stop.set()``); ``until_idle``: also stop at the
        first empty read (tests, catch-up runs); ``max_records``: after that many records. Archives run in the
        background, one at a time; stopping waits for it, then archives the rest."""
        block = parse_duration(self.stream.poll).total_seconds()
        # What was loaded to start (Feast, its registry, pyarrow, the config) lives as long as the worker: out of
        # the collector's sight, a full collection walks only what batches make (its pauses are push lag).
        gc.freeze()
        try:
            while not self.stop.is_set():
                messages = self.source.read(self.stream.batch_size, block)
                self.process(messages)
                self._ages()
                self._finish_archive(wait=False)
                if self._archiving is None and self.archive_due():
                    self._start_archive()
                    self._store_samples()
                if (until_idle and not messages) or (max_records is not None and self.stats.records >= max_records):
                    break
        finally:
            self.stop.set()
            self.flush()
        return self.stats


def serve_metrics(metrics: StreamMetrics, port: int) -> None:
    """The worker's /metrics on ``port`` (0: none)."""
    if port:
        start_http_server(port, registry=metrics.registry)


def stop_on_signals(worker: StreamWorker) -> None:
    """SIGTERM (Kubernetes stopping the pod) and SIGINT end the loop after the current batch."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())


def open_worker(config: Config, storage: Storage, environ: Mapping[str, str]) -> StreamWorker:
    """The worker of ``config``: its source, state and Feast store."""
    from kfloop.stream.sources import open_source, redis_client

    source = open_source(config, environ)
    return StreamWorker(
        config,
        storage,
        source,
        RedisHistories(redis_client(config, environ), config.project),
        open_store(config, storage, environ),
    )
