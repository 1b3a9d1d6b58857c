"""Feature stage: the clean dataset → per-view offline feature tables (the Feast offline sources).

Incremental: each view continues from its watermark (``computed_until``), reading only the clean rows
its windows need (the longest window plus the label delay before the watermark). A changed view
definition rebuilds that view from scratch. Each table is replaced atomically, so Feast never reads
a half-written file.
"""

# No `from __future__ import annotations` here: kfp reads the component signatures at decoration time.
import hashlib
import io
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from kfp.dsl import Metrics, Output

from kfloop import lake
from kfloop.aggregates import TIMESTAMP_TYPE, compute_view
from kfloop.components.validate import clean_dataset
from kfloop.config import Config, FeatureViewSpec
from kfloop.config.contract import parse_duration
from kfloop.errors import SourceError
from kfloop.feature_repo.paths import offline_key
from kfloop.feature_repo.state import ViewState, load_state
from kfloop.storage import Storage


@dataclass(frozen=True)
class ViewUpdate:
    """What one run did to one view's offline table."""

    view: str
    rows_added: int
    offline_rows: int
    computed_until: str | None
    rebuilt: bool
    seconds: float


def definition_hash(view: FeatureViewSpec, config: Config) -> str:
    body = view.model_dump_json() + config.features.label_delay + config.source.timestamp_column
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def lookback(view: FeatureViewSpec, label_delay: timedelta) -> timedelta:
    """How much history before the watermark a view's windows need."""
    longest = max(parse_duration(w) for agg in view.aggregates for w in agg.windows)
    delayed = any(agg.label_delay for agg in view.aggregates)
    return longest + (label_delay if delayed else timedelta(0)) + timedelta(seconds=1)


def _columns(view: FeatureViewSpec, config: Config) -> list[str]:
    return list(dict.fromkeys([view.entity, config.source.timestamp_column, *(a.column for a in view.aggregates)]))


def _history(
    storage: Storage, manifest: lake.Manifest, config: Config, view: FeatureViewSpec, start: datetime | None
) -> pa.Table:
    """Clean rows the view needs: files overlapping ``start``…, only the needed columns."""
    ts = config.source.timestamp_column
    files = [f for f in manifest.files if start is None or f.max_event_time >= start.isoformat()]
    part = lake.Manifest(manifest.dataset, manifest.schema, manifest.schema_hash, files)
    tables = []
    for batch in lake.iter_dataset(storage, part, config.source.batch_rows, _columns(view, config)):
        keep = batch if start is None else batch.filter(pc.greater(batch.column(ts), pa.scalar(start, TIMESTAMP_TYPE)))
        tables.append(keep)
    if not tables:
        return pa.schema([pa.field(c, pa.string()) for c in _columns(view, config)]).empty_table()
    return pa.concat_tables(tables)


def _read_offline(storage: Storage, view: str) -> pa.Table | None:
    try:
        return pq.read_table(pa.BufferReader(storage.read_bytes(offline_key(view))))
    except FileNotFoundError:
        return None


def _write_offline(storage: Storage, view: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(offline_key(view), buf.getvalue())


def _fill_time_since_previous(added: pa.Table, previous: pa.Table, entity: str) -> pa.Table:
    """An entity's previous event may be older than the look-back read this run; the offline table
    still has it (one row per event), so a gap left null is filled from there."""
    col = added.column("seconds_since_previous")
    if col.null_count == 0 or previous.num_rows == 0:
        return added
    last = previous.group_by(entity).aggregate([("event_timestamp", "max")]).to_pandas()
    last_seen = dict(zip(last[entity], last["event_timestamp_max"], strict=True))
    frame = added.select([entity, "event_timestamp"]).to_pandas()
    gaps = col.to_pandas()
    before = frame[entity].map(last_seen)
    fill = (frame["event_timestamp"] - before).dt.total_seconds()
    gaps = gaps.where(gaps.notna() | before.isna(), fill)
    index = added.schema.get_field_index("seconds_since_previous")
    return added.set_column(index, "seconds_since_previous", pa.array(gaps, pa.float64(), from_pandas=True))


def update_view(storage: Storage, manifest: lake.Manifest, config: Config, view: FeatureViewSpec) -> ViewUpdate:
    """Bring one view's offline table up to the clean dataset's newest event."""
    t0 = time.perf_counter()
    state = load_state(storage, view.name)
    definition = definition_hash(view, config)
    rebuilt = state.definition != definition
    since = None if rebuilt or not state.computed_until else datetime.fromisoformat(state.computed_until)
    label_delay = parse_duration(config.features.label_delay)
    start = since - lookback(view, label_delay) if since else None
    history = _history(storage, manifest, config, view, start)
    added = (
        compute_view(history, view, config.source.timestamp_column, label_delay, since) if history.num_rows else None
    )
    previous = None if rebuilt else _read_offline(storage, view.name)
    if added is not None and previous is not None and view.time_since_previous:
        added = _fill_time_since_previous(added, previous, view.entity)
    rows_added = added.num_rows if added is not None else 0
    if rows_added or rebuilt:
        parts = [t for t in (previous, added) if t is not None and t.num_rows]
        table = pa.concat_tables(parts) if parts else added
        if table is not None:
            _write_offline(storage, view.name, table)
            newest = pc.max(table.column("event_timestamp")).as_py()
            state = ViewState(
                view=view.name,
                computed_until=newest.isoformat() if newest else None,
                offline_rows=table.num_rows,
                materialized_until=None if rebuilt else state.materialized_until,
                online_entities=0 if rebuilt else state.online_entities,
                definition=definition,
            )
            state.save(storage)
    return ViewUpdate(
        view.name, rows_added, state.offline_rows, state.computed_until, rebuilt, round(time.perf_counter() - t0, 3)
    )


def compute_features(config: Config, storage: Storage) -> list[ViewUpdate]:
    """Update every feature view from the clean dataset (see module docstring)."""
    if not config.features.views:
        raise SourceError("features.views is empty: declare feature views in kfloop.yaml")
    manifest = lake.read_manifest(storage, clean_dataset(config.source.dataset))
    if manifest is None or not manifest.files:
        raise SourceError(f"clean dataset {clean_dataset(config.source.dataset)!r} is empty: run validation first")
    return [update_view(storage, manifest, config, view) for view in config.features.views]


def run_features_step(config_json: str) -> list[dict]:
    """Entrypoint inside the pipeline step; plain dicts, so the component body needs no imports."""
    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return [asdict(u) for u in compute_features(config, storage)]


def features_component(config_json: str, metrics: Output[Metrics]) -> str:
    """KFP step: compute the offline feature tables (Feast sources) from the clean dataset."""
    import json

    from kfloop.components.features import run_features_step

    updates = run_features_step(config_json)
    for u in updates:
        metrics.log_metric(f"{u['view']}_rows_added", u["rows_added"])
        metrics.log_metric(f"{u['view']}_offline_rows", u["offline_rows"])
    return json.dumps(updates)
