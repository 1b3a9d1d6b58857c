"""Feature stage: the clean dataset → per-view offline feature tables (the Feast offline sources).

Incremental: each view continues from its watermark (``computed_until``), reading only the clean rows
its windows need (the longest window plus the longest delay before a value is known, before the watermark;
all of it for a value known at another column's time). Features follow the
clean data: when the clean rows up to the watermark changed (a contract change, re-validation, new
quarantines, a backfill), per-date fingerprints (``feature_repo/fingerprints.py``) find the earliest
changed event and the view is recomputed from there — older rows cannot depend on it, later ones may —
and the entities whose rows were replaced or vanished are marked for the materialize stage. A changed
view definition rebuilds that view from scratch. Each table is replaced atomically, so Feast never reads
a half-written file, and a per-view lease keeps overlapping runs from interleaving table and state.

Attribute tables (``features.tables``) are views too, of their own clean dataset (``update_table``): small, so
read whole each run and compared with the offline table; the keys whose rows changed are marked stale, which
is how a snapshot's updated attribute (same ``valid_from``, so below any watermark) reaches the online store.
"""

import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop import lake
from kfloop.aggregates import compute_view
from kfloop.config import AttributeTable, Config, FeatureViewSpec
from kfloop.config._base import METADATA_FIELDS
from kfloop.config.availability import Availability, KnownAt, known_after
from kfloop.config.contract import parse_duration
from kfloop.config.features import FEATURE_TIMESTAMP, TIME_SINCE_PREVIOUS
from kfloop.errors import SourceError
from kfloop.feature_repo import fingerprints
from kfloop.feature_repo.state import ViewState, load_state, view_lease
from kfloop.layout import clean_dataset, offline_key, stale_key
from kfloop.lineage.run import emits
from kfloop.schema import arrow_schema
from kfloop.step import new_run_id
from kfloop.storage import Storage
from kfloop.storage.lease import Lease

#: Reads of the clean dataset per run: a manifest whose files were deleted under a long read is read again.
_READ_ATTEMPTS = 3
_US = timedelta(microseconds=1)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewUpdate:
    """What one run did to one view's offline table."""

    view: str
    rows_added: int  # rows computed and written: new events, plus recomputed ones after a clean-data change
    offline_rows: int
    computed_until: str | None
    rebuilt: bool
    seconds: float
    rows_removed: int = 0  # old rows replaced by the recompute (or gone with their clean rows)
    recomputed_from: str | None = None  # earliest event whose clean rows changed; None: incremental or rebuilt
    changed_dates: list[str] = field(default_factory=list)  # event dates whose clean rows changed
    rehashed_dates: int = 0  # partitions whose files changed, read to compare their content


def availability(view: FeatureViewSpec, config: Config) -> dict[str, Availability]:
    """``source.available_after`` for the columns the view aggregates."""
    declared = config.source.available_after
    return {a.column: declared[a.column] for a in view.aggregates if a.column in declared}


def definition_hash(view: FeatureViewSpec, config: Config) -> str:
    body = (
        view.model_dump_json(exclude=set(METADATA_FIELDS))
        + config.features.label_delay
        + config.source.timestamp_column
    )
    known = availability(view, config)
    if known:  # a view without late-known columns keeps its hash from before available_after existed
        body += json.dumps({c: v.model_dump() if isinstance(v, KnownAt) else v for c, v in known.items()})
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def lookback(
    view: FeatureViewSpec, label_delay: timedelta, available_after: Mapping[str, Availability] | None = None
) -> timedelta | None:
    """How much history before the watermark a view's windows need; ``None``: all of it (a value known at
    another column's time may be known any time after its event)."""
    longest = max(parse_duration(w) for agg in view.aggregates for w in agg.windows)
    delays = [known_after(a.column, a.label_delay, label_delay, available_after or {}) for a in view.aggregates]
    if any(isinstance(d, str) for d in delays):
        return None
    return longest + max((d for d in delays if isinstance(d, timedelta)), default=timedelta(0)) + timedelta(seconds=1)


def view_columns(view: FeatureViewSpec, config: Config) -> list[str]:
    """The clean columns a view's aggregates read: entity, event time, aggregated columns, ``at`` columns."""
    at = [v.at for v in availability(view, config).values() if isinstance(v, KnownAt)]
    return list(dict.fromkeys([view.entity, config.source.timestamp_column, *(a.column for a in view.aggregates), *at]))


class _CleanFilesGoneError(SourceError):
    """A file of the clean manifest being read was deleted (retired by a newer validation, then past its grace)."""


class _CleanRows:
    """The clean dataset by event-date partition, the view's columns only; each date read at most once a
    run (fingerprint checks and the history share the reads)."""

    def __init__(self, storage: Storage, manifest: lake.Manifest, config: Config, view: FeatureViewSpec) -> None:
        self.storage, self.manifest, self.batch_rows = storage, manifest, config.source.batch_rows
        self.columns = view_columns(view, config)
        self.empty = arrow_schema(config.source).empty_table().select(self.columns)
        self.partitions = fingerprints.by_date(manifest)
        self._read: dict[str, pa.Table] = {}

    def read(self, date: str) -> pa.Table:
        if date not in self._read:
            m = self.manifest
            part = lake.Manifest(m.dataset, m.schema, m.schema_hash, self.partitions.get(date, []))
            try:
                tables = list(lake.iter_dataset(self.storage, part, self.batch_rows, self.columns))
            except FileNotFoundError as err:
                raise _CleanFilesGoneError(
                    f"clean dataset {m.dataset!r}: a file of the manifest this run read is gone ({err}): it was "
                    "replaced by a newer validation and removed after its grace period while this run still read it"
                ) from err
            self._read[date] = pa.concat_tables(tables) if tables else self.empty
        return self._read[date]

    def dates_after(self, start: datetime | None) -> list[str]:
        """Dates holding an event after ``start`` (every date for None)."""
        return sorted(
            d
            for d, files in self.partitions.items()
            if start is None or any(datetime.fromisoformat(f.max_event_time) > start for f in files)
        )

    def rows(self, dates: list[str]) -> pa.Table:
        tables = [t for t in (self.read(d) for d in dates) if t.num_rows]
        return pa.concat_tables(tables) if tables else self.empty


def _read_offline(storage: Storage, view: str) -> pa.Table | None:
    try:
        return pq.read_table(pa.BufferReader(storage.read_bytes(offline_key(view))))
    except FileNotFoundError:
        return None


def _write_offline(storage: Storage, view: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(offline_key(view), buf.getvalue())


def _mark_stale(storage: Storage, view: str, entities: pa.ChunkedArray | pa.Array) -> None:
    """Add entities to the view's stale set (kept until the materialize stage rewrites or deletes them).
    Written before the table it concerns: a run killed in between leaves extra entities, never too few."""
    values = entities.combine_chunks() if isinstance(entities, pa.ChunkedArray) else entities
    try:
        old = pq.read_table(pa.BufferReader(storage.read_bytes(stale_key(view)))).column("entity")
        values = pa.concat_arrays([old.combine_chunks().cast(values.type), values])
    except FileNotFoundError:
        pass
    buf = io.BytesIO()
    pq.write_table(pa.table({"entity": pc.unique(values.drop_null())}), buf, compression="zstd")
    storage.write_bytes(stale_key(view), buf.getvalue())


def _fill_time_since_previous(added: pa.Table, previous: pa.Table, entity: str) -> pa.Table:
    """An entity's previous event may be older than the look-back read this run; the offline table
    still has it (one row per event), so a gap left null is filled from there."""
    col = added.column(TIME_SINCE_PREVIOUS)
    if col.null_count == 0 or previous.num_rows == 0:
        return added
    last = previous.group_by(entity).aggregate([(FEATURE_TIMESTAMP, "max")]).to_pandas()
    last_seen = dict(zip(last[entity], last[f"{FEATURE_TIMESTAMP}_max"], strict=True))
    frame = added.select([entity, FEATURE_TIMESTAMP]).to_pandas()
    gaps = col.to_pandas()
    before = frame[entity].map(last_seen)
    fill = (frame[FEATURE_TIMESTAMP] - before).dt.total_seconds()
    gaps = gaps.where(gaps.notna() | before.isna(), fill)
    index = added.schema.get_field_index(TIME_SINCE_PREVIOUS)
    return added.set_column(index, TIME_SINCE_PREVIOUS, pa.array(gaps, pa.float64(), from_pandas=True))


def _split(table: pa.Table | None, since: datetime | None) -> tuple[pa.Table | None, pa.Table | None]:
    """(rows at or before ``since``: kept, rows after it: replaced by this run)."""
    if table is None or since is None:
        return None, table
    ts = table.column(FEATURE_TIMESTAMP)
    after = pc.greater(ts, pa.scalar(since, ts.type))
    return table.filter(pc.invert(after)), table.filter(after)


def _fingerprints(
    clean: _CleanRows, dates: list[str], ts: str, newest: datetime | None, verified: dict[str, fingerprints.Fingerprint]
) -> dict[str, fingerprints.Fingerprint]:
    """The new state's fingerprints (rows up to ``newest``): the verified unchanged ones, and a fresh one for
    every date read this run (the watermark's day may have gained rows)."""
    if newest is None:
        return {}
    out = dict(verified)
    for date in dates:
        p = fingerprints.fingerprint(clean.read(date), ts, fingerprints.file_signature(clean.partitions[date]), newest)
        if p.rows:
            out[date] = p
    return out


def _clean_manifest(storage: Storage, config: Config) -> lake.Manifest:
    """The clean dataset now. One a validation committed with no rows (a contract that quarantines every record
    and lets the gate pass) is valid input: the views follow it, their rows and online values go."""
    manifest = lake.read_manifest(storage, clean_dataset(config.source.dataset))
    if manifest is None or not (manifest.files or manifest.runs):
        raise SourceError(f"clean dataset {clean_dataset(config.source.dataset)!r} is empty: run validation first")
    return manifest


def update_view(storage: Storage, config: Config, view: FeatureViewSpec, *, run_id: str = "") -> ViewUpdate:
    """Bring one view's offline table up to the clean dataset (see module docstring), holding its lease.
    The clean manifest is read under the lease: a run that waited sees the data the previous holder saw, or
    newer, never older."""
    with view_lease(storage, view.name, run_id) as held:
        for attempt in range(_READ_ATTEMPTS):
            try:  # every clean read comes before the first write: a retry starts from unchanged state
                return _update_view(storage, _clean_manifest(storage, config), config, view, held)
            except _CleanFilesGoneError as err:
                if attempt + 1 == _READ_ATTEMPTS:
                    raise SourceError(f"feature view {view.name}: {err}; re-run the feature stage") from err
                log.warning("feature view %s: %s; reading the clean dataset again", view.name, err)
        raise AssertionError("unreachable")


def _update_view(
    storage: Storage, manifest: lake.Manifest, config: Config, view: FeatureViewSpec, held: Lease
) -> ViewUpdate:
    """Check the clean rows up to the watermark, recompute from the first change (or the watermark), then
    stale marks, table and state, in that order (a run killed in between repeats the same work)."""
    t0 = time.perf_counter()
    ts = config.source.timestamp_column
    state = load_state(storage, view.name)
    definition = definition_hash(view, config)
    # a state without fingerprints cannot tell what its rows were computed from: rebuild once
    rebuilt = state.definition != definition or (state.computed_until is not None and state.partitions is None)
    clean = _CleanRows(storage, manifest, config, view)
    since = None if rebuilt or not state.computed_until else datetime.fromisoformat(state.computed_until)
    changes = None
    if since is not None:
        changes = fingerprints.compare(state.partitions or {}, clean.partitions, since, clean.read, ts)
        if changes.earliest is not None:
            since = min(since, changes.earliest - _US)  # rows from the first changed event on are recomputed
    label_delay, known = parse_duration(config.features.label_delay), availability(view, config)
    back = lookback(view, label_delay, known)
    dates = clean.dates_after(since - back if since and back is not None else None)
    history = clean.rows(dates)
    added = compute_view(history, view, ts, label_delay, since, known) if history.num_rows else None
    kept, dropped = _split(_read_offline(storage, view.name), since)
    if added is not None and kept is not None and view.time_since_previous:
        added = _fill_time_since_previous(added, kept, view.entity)
    rows_added = added.num_rows if added is not None else 0
    rows_removed = dropped.num_rows if dropped is not None else 0
    parts = [t for t in (kept, added) if t is not None and t.num_rows]
    table = pa.concat_tables(parts) if parts else (added if added is not None else kept)
    newest = pc.max(table.column(FEATURE_TIMESTAMP)).as_py() if table is not None and table.num_rows else None
    prints = _fingerprints(clean, dates, ts, newest, changes.unchanged if changes else {})
    if table is not None and (rows_added or rows_removed or rebuilt):
        held.check()
        if rows_removed and view.entity in dropped.column_names:
            _mark_stale(storage, view.name, dropped.column(view.entity))
        _write_offline(storage, view.name, table)
    if table is not None and (rows_added or rows_removed or rebuilt or prints != state.partitions):
        online_until = state.materialized_until
        if since is None:
            online_until = None
        elif online_until and datetime.fromisoformat(online_until) > since:
            online_until = since.isoformat()  # the online store is behind the recomputed rows again
        state = ViewState(
            view=view.name,
            computed_until=newest.isoformat() if newest else None,
            offline_rows=table.num_rows,
            materialized_until=online_until,
            online_entities=0 if rebuilt else state.online_entities,
            definition=definition,
            partitions=prints,
        )
        held.check()
        state.save(storage)
    earliest = changes.earliest if changes else None
    return ViewUpdate(
        view.name,
        rows_added,
        state.offline_rows,
        state.computed_until,
        rebuilt,
        round(time.perf_counter() - t0, 3),
        rows_removed,
        earliest.isoformat() if earliest else None,
        list(changes.changed) if changes else [],
        changes.rehashed if changes else 0,
    )


def table_definition_hash(table: AttributeTable) -> str:
    """Hash of a table's definition (source, contract, features, ttl): a change rebuilds its view."""
    return hashlib.sha256(table.model_dump_json().encode()).hexdigest()[:16]


def _table_manifest(storage: Storage, table: AttributeTable) -> lake.Manifest:
    """The table's clean dataset now; one committed with no rows is valid (the table's rows all go)."""
    name = clean_dataset(table.name)
    manifest = lake.read_manifest(storage, name)
    if manifest is None or not (manifest.files or manifest.runs):
        raise SourceError(
            f"attribute table {table.name}: clean dataset {name!r} is empty: ingest and validate the table first "
            "(the ingest and validate stages on config.table_config(name))"
        )
    return manifest


def _table_rows(storage: Storage, manifest: lake.Manifest, table: AttributeTable) -> pa.Table:
    """The offline table of an attribute table: key, event_timestamp (the table's time column), features;
    one row per (key, time), the last one read winning, sorted by (event_timestamp, key)."""
    src = table.source_config()
    cols = [table.key, table.timestamp_column, *table.feature_names()]
    try:
        parts = list(lake.iter_dataset(storage, manifest, src.batch_rows, cols))
    except FileNotFoundError as err:
        raise _CleanFilesGoneError(
            f"clean dataset {manifest.dataset!r}: a file of the manifest this run read is gone ({err})"
        ) from err
    rows = pa.concat_tables(parts) if parts else arrow_schema(src).empty_table().select(cols)
    rows = rows.rename_columns([table.key, FEATURE_TIMESTAMP, *table.feature_names()])
    rows = rows.filter(pc.and_(pc.is_valid(rows.column(table.key)), pc.is_valid(rows.column(FEATURE_TIMESTAMP))))
    if rows.num_rows:
        idx = pa.array(range(rows.num_rows), pa.int64())
        last = rows.append_column("_i", idx).group_by([table.key, FEATURE_TIMESTAMP], use_threads=False)
        rows = rows.take(last.aggregate([("_i", "max")]).column("_i_max"))
    order = pc.sort_indices(rows, [(FEATURE_TIMESTAMP, "ascending"), (table.key, "ascending")])
    return rows.take(order).combine_chunks()


def _row_set(table: pa.Table) -> set[tuple]:
    names = table.column_names
    return {tuple(r[c] for c in names) for r in table.to_pylist()}


def update_table(storage: Storage, config: Config, table: AttributeTable, *, run_id: str = "") -> ViewUpdate:
    """Bring an attribute table's offline table (its Feast view's source) up to the table's clean dataset,
    holding the view's lease. Tables are small: the whole clean dataset is read once and compared with the
    offline table; identical, nothing is written. Otherwise the keys whose rows changed, appeared or vanished
    are marked stale (the materialize stage rewrites their newest row online or deletes them: a snapshot's
    changed attribute keeps its valid_from, so no watermark would see it), then table, then state."""
    with view_lease(storage, table.name, run_id) as held:
        for attempt in range(_READ_ATTEMPTS):
            try:
                return _update_table(storage, _table_manifest(storage, table), table, held)
            except _CleanFilesGoneError as err:
                if attempt + 1 == _READ_ATTEMPTS:
                    raise SourceError(f"attribute table {table.name}: {err}; re-run the feature stage") from err
                log.warning("attribute table %s: %s; reading the clean dataset again", table.name, err)
        raise AssertionError("unreachable")


def _update_table(storage: Storage, manifest: lake.Manifest, table: AttributeTable, held: Lease) -> ViewUpdate:
    t0 = time.perf_counter()
    state = load_state(storage, table.name)
    definition = table_definition_hash(table)
    new = _table_rows(storage, manifest, table)
    old = _read_offline(storage, table.name)
    rebuilt = old is None or state.definition != definition or old.schema != new.schema
    newest = pc.max(new.column(FEATURE_TIMESTAMP)).as_py() if new.num_rows else None
    computed = newest.isoformat() if newest else None
    same = not rebuilt and old.equals(new)
    if same and (state.computed_until, state.offline_rows) == (computed, new.num_rows):
        return ViewUpdate(table.name, 0, state.offline_rows, state.computed_until, False, _seconds(t0))
    # same table, other state: a run stopped after writing the table; its stale marks are already written
    old_rows = _row_set(old) if old is not None and old.schema == new.schema and not same else set()
    new_rows = set() if same else _row_set(new)
    added, removed = new_rows - old_rows, old_rows - new_rows
    online_until = state.materialized_until
    if rebuilt:  # every key is written again; the old table's keys without a row left are deleted
        online_until = None
        keys = set(new.column(table.key).to_pylist())
        stale = [] if old is None else [k for k in set(old.column(table.key).to_pylist()) if k not in keys]
    else:  # changed rows may lie at or before the watermark (a snapshot's all do): their keys are rewritten
        stale = sorted({r[0] for r in added | removed})
        if online_until and (newest is None or datetime.fromisoformat(online_until) > newest):
            online_until = newest.isoformat() if newest else None
    held.check()
    if stale:
        key_type = new.schema.field(table.key).type
        _mark_stale(storage, table.name, pa.array(sorted(stale), key_type))
    if not same:
        _write_offline(storage, table.name, new)
    state = ViewState(
        view=table.name,
        computed_until=computed,
        offline_rows=new.num_rows,
        materialized_until=online_until,
        online_entities=0 if rebuilt else state.online_entities,
        definition=definition,
        partitions={},
    )
    held.check()
    state.save(storage)
    return ViewUpdate(table.name, len(added), new.num_rows, state.computed_until, rebuilt, _seconds(t0), len(removed))


def _seconds(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


@emits("features")
def compute_features(config: Config, storage: Storage, *, run_id: str | None = None) -> list[ViewUpdate]:
    """Update every feature view from the clean dataset, and every attribute table's view from its own clean
    dataset (see module docstring and :func:`update_table`)."""
    run_id = run_id or new_run_id()
    feats = config.features
    if not feats.views and not feats.tables:
        raise SourceError(
            "features.views is empty and so is features.tables: declare feature views or attribute tables in "
            "kfloop.yaml"
        )
    if feats.views:
        _clean_manifest(storage, config)  # fail before taking any lease
    for table in feats.tables:
        _table_manifest(storage, table)
    out = [update_view(storage, config, view, run_id=run_id) for view in feats.views]
    return out + [update_table(storage, config, table, run_id=run_id) for table in feats.tables]


def run_features_step(config_json: str) -> list[dict]:
    """Entrypoint inside the pipeline step; plain dicts, so the component body needs no imports."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return [asdict(u) for u in compute_features(config, storage)]
