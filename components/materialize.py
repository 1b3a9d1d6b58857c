"""Materialize stage: ``feast apply``, then incremental materialization into the online store.

Only feature rows newer than the view's ``materialized_until`` are read, reduced to the newest row
per entity and written in Feast's online format (the bytes Feast's ``online_write_batch`` stores, encoded
straight from Arrow by ``kfloop.feature_repo.online_write``; Feast's own conversion where that cannot
promise the same bytes) — without the offline-store query Feast's generic ``materialize`` runs. A re-run
writes nothing new; a failed write leaves the watermark where it was, so the next run rewrites the same rows
(upserts: no duplicates).

Entities the feature stage marked stale (their rows were recomputed or vanished with their clean rows)
get their newest row rewritten, or are deleted from the online store when no row is left, so online
values always equal a fresh full computation + materialization. Each view is materialized under its
lease, so a feature run cannot replace the table or state in between. Attribute tables are materialized
the same way, keyed by ``table.key``.
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView, ValueType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.utils import _convert_arrow_to_proto

from kfloop.config import Config
from kfloop.config.features import FEATURE_TIMESTAMP
from kfloop.errors import StorageError
from kfloop.feature_repo.definitions import view_keys
from kfloop.feature_repo.freshness import LagRecorder, lag_seconds, record_samples
from kfloop.feature_repo.online_delete import delete_online
from kfloop.feature_repo.online_write import blocker, write_encoded
from kfloop.feature_repo.permissions import drop_stale_permissions
from kfloop.feature_repo.state import load_state, view_lease
from kfloop.feature_repo.store import objects_for, open_store
from kfloop.layout import offline_key, stale_key
from kfloop.lineage.run import emits
from kfloop.step import new_run_id
from kfloop.storage import Storage
from kfloop.storage.lease import Lease

log = logging.getLogger(__name__)

#: The materialize stage's name as a writer of freshness samples (runs of one view are serialized by its lease).
FRESHNESS_WRITER = "materialize"
#: Entities of each run's writes kept to probe the online store with at the next run.
PROBE_ENTITIES = 3
#: Rows converted and written per online-store call on Feast's path: bounds memory, keeps each call large.
WRITE_BATCH_ROWS = 10_000
_FEAST_PATH_NOTED: set[tuple[str, str]] = set()  # (view, reason) already logged


@dataclass(frozen=True)
class Materialized:
    """What one run wrote for one view."""

    view: str
    rows_written: int  # entity rows upserted into the online store
    materialized_until: str | None
    lag_seconds: float  # newest offline event minus newest online event (0 when caught up)
    seconds: float
    rows_deleted: int = 0  # entities removed from the online store: none of their clean rows is left


def latest_per_entity(table: pa.Table, entity: str) -> pa.Table:
    """The newest row of each entity (the table is sorted by event time, so the last one wins)."""
    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows), pa.int64())
    last = table.append_column("_i", idx).group_by(entity, use_threads=False).aggregate([("_i", "max")])
    if last.num_rows == table.num_rows:  # one row per entity already: no copy of the table
        return table
    return table.take(np.sort(last.column("_i_max").to_numpy()))


def write_online(store: FeatureStore, view: FeatureView, table: pa.Table, entity: str) -> int:
    """Upsert rows into the online store in Feast's format; returns rows written. Encoded straight from Arrow
    (``kfloop.feature_repo.online_write``: the same stored bytes, several times faster) where it can promise
    Feast's bytes, else through Feast's own conversion and ``online_write_batch``."""
    if table.num_rows == 0:
        return 0
    key_type = join_key_type(store, view, entity)
    reason = blocker(store.config, view, table, entity, key_type)
    try:
        if reason is None:
            write_encoded(store, view, table, entity, key_type)
        else:
            _feast_write(store, view, table, entity, key_type, reason)
    except Exception as err:  # redis/sqlite client errors have no common base
        raise StorageError(
            f"online store ({store.config.online_store.type}) write failed for {view.name}: {type(err).__name__}: {err}"
        ) from err
    return table.num_rows


def _feast_write(
    store: FeatureStore, view: FeatureView, table: pa.Table, entity: str, key_type: ValueType, reason: str
) -> None:
    """Feast's own path: a proto per value, ``online_write_batch`` per slice of ``WRITE_BATCH_ROWS``."""
    if (view.name, reason) not in _FEAST_PATH_NOTED:  # once per view and reason: the stream worker writes often
        _FEAST_PATH_NOTED.add((view.name, reason))
        log.info("online write of %s through Feast's conversion (slower): %s", view.name, reason)
    provider = store._get_provider()
    # in slices: the protos of a whole table would take gigabytes; Feast converts a RecordBatch
    for batch in table.combine_chunks().to_batches(max_chunksize=WRITE_BATCH_ROWS):
        provider.online_write_batch(store.config, view, _convert_arrow_to_proto(batch, view, {entity: key_type}), None)


def join_key_type(store: FeatureStore, view: FeatureView, entity: str) -> ValueType:
    """The value type of the view's join key ``entity``: from the view itself (no registry read: the stream
    worker writes every batch), else from the registered entities."""
    for column in view.entity_columns:
        if column.name == entity:
            return column.dtype.to_value_type()
    return next(e.value_type for e in store.list_entities() if e.join_key == entity)


def _keys(store: FeatureStore, view: FeatureView, entity: str, values: list) -> list[EntityKeyProto]:
    """Feast's entity keys of ``values`` of the join key ``entity`` (its declared value type)."""
    kind = join_key_type(store, view, entity)
    return [EntityKeyProto(join_keys=[entity], entity_values=[v]) for v in python_values_to_proto_values(values, kind)]


def _wiped(store: FeatureStore, name: str, entity: str, probe: list) -> bool:
    """Whether none of ``probe`` (entities the last run wrote) is in the online store any more."""
    view = store.get_feature_view(name)
    rows = store._get_provider().online_read(
        store.config, view, _keys(store, view, entity, probe), [view.features[0].name]
    )
    return all(ts is None or not row or not any(v.WhichOneof("val") for v in row.values()) for ts, row in rows)


def _utc(ts: datetime) -> datetime:
    """An online store's timestamp as an aware UTC time (Feast's SQLite store gives naive UTC ones)."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _newer_mask(table: pa.Table, since: str | None) -> pa.ChunkedArray:
    """Rows after ``since`` (every row for None)."""
    ts = table.column(FEATURE_TIMESTAMP)
    if since is None:
        return pc.is_valid(ts)
    return pc.greater(ts, pa.scalar(datetime.fromisoformat(since), ts.type))


def _lag(computed: str | None, materialized: str | None) -> float:
    if not computed:
        return 0.0
    if not materialized:
        return float("inf")
    return max(0.0, (datetime.fromisoformat(computed) - datetime.fromisoformat(materialized)).total_seconds())


@emits("materialize")
def materialize(
    config: Config,
    storage: Storage,
    environ: Mapping[str, str],
    store: FeatureStore | None = None,
    *,
    full: bool = False,
) -> list[Materialized]:
    """Apply the Feast objects and materialize every view incrementally (see module docstring).
    ``full`` rewrites every entity's newest row, e.g. after the online store was wiped."""
    store = store or open_store(config, storage, environ)
    apply_objects(config, storage, store)
    run_id = new_run_id()
    out = []
    streamed = config.stream is not None
    lags = LagRecorder()
    for name, entity in view_keys(config).items():  # the views, then the attribute tables (keyed by table.key)
        with view_lease(storage, name, run_id) as held:
            out.append(_materialize_view(store, storage, name, entity, held, full=full, streamed=streamed, lags=lags))
    record_samples(storage, lags.closed(), writer=FRESHNESS_WRITER)
    return out


def apply_objects(config: Config, storage: Storage, store: FeatureStore) -> None:
    """``feast apply`` of the config's objects: registers the views and opens the online store (SQLite creates
    its tables here). Every online writer calls it first (the stage, the stream worker)."""
    try:
        store.apply(objects_for(config, storage).all)
        drop_stale_permissions(config, store)  # a role removed from governance.roles
    except Exception as err:
        where = store.config.online_store.path if config.features.online_store.type == "sqlite" else "redis"
        raise StorageError(
            f"online store ({config.features.online_store.type}) at {where}: cannot apply the "
            f"feature views (registry {store.config.registry.path}, online store): {type(err).__name__}: {err}"
        ) from err


def not_older_than_online(store: FeatureStore, view: FeatureView, table: pa.Table, entity: str) -> pa.Table:
    """The rows of ``table`` (one per entity) whose event time is not older than the entity's row online. With a
    stream worker writing newer events online between batch runs, a batch run must not set an entity back to an
    older row (Feast's Redis store skips such writes itself; its SQLite store does not)."""
    if table.num_rows == 0:
        return table
    keys = _keys(store, view, entity, table.column(entity).to_pylist())
    online = store._get_provider().online_read(store.config, view, keys, [view.features[0].name])
    new_ts = table.column(FEATURE_TIMESTAMP).to_pylist()
    keep = [row_ts is None or ts is None or row_ts >= _utc(ts) for (ts, _), row_ts in zip(online, new_ts, strict=True)]
    return table.filter(pa.array(keep))


def _read_stale(storage: Storage, view: str) -> pa.Array | None:
    try:
        return pq.read_table(pa.BufferReader(storage.read_bytes(stale_key(view)))).column("entity").combine_chunks()
    except FileNotFoundError:
        return None


def _delete_online(store: FeatureStore, view: FeatureView, entity: str, values: list) -> int:
    try:
        return delete_online(store, view, entity, values)
    except Exception as err:  # redis/sqlite client errors have no common base
        raise StorageError(
            f"online store ({store.config.online_store.type}) delete failed for {view.name}: "
            f"{type(err).__name__}: {err}"
        ) from err


def _materialize_view(
    store: FeatureStore,
    storage: Storage,
    name: str,
    entity: str,
    held: Lease,
    *,
    full: bool,
    streamed: bool,
    lags: LagRecorder,
) -> Materialized:
    """One view (or attribute table) keyed by ``entity``: the newest row of every entity with newer rows or
    marked stale; stale entities without rows deleted. The state and the stale mark change only after the
    online store took the writes."""
    t0 = time.perf_counter()
    state = load_state(storage, name)
    if not full and state.materialized_until and state.online_probe and _wiped(store, name, entity, state.online_probe):
        log.warning(
            "online store lost feature view %s (none of its probe entities is there): writing every entity", name
        )
        full = True
    if full:
        state.materialized_until = None
    stale = _read_stale(storage, name)
    written = deleted = 0
    if stale is not None or (state.computed_until and state.computed_until != state.materialized_until):
        table = pq.read_table(pa.BufferReader(storage.read_bytes(offline_key(name))))
        entities = table.column(entity)
        wanted = _newer_mask(table, state.materialized_until)
        gone: list = []  # stale entities without any row left: deleted from the online store
        if stale is not None:
            stale = stale.cast(entities.type)
            wanted = pc.or_(wanted, pc.is_in(entities, value_set=stale))
            gone = pc.filter(stale, pc.invert(pc.is_in(stale, value_set=entities.combine_chunks()))).to_pylist()
        fresh = latest_per_entity(table if pc.all(wanted).as_py() else table.filter(wanted), entity)
        view = store.get_feature_view(name)
        if streamed:
            fresh = not_older_than_online(store, view, fresh, entity)
        written = write_online(store, view, fresh, entity)
        written_at = datetime.now(UTC)
        if fresh.num_rows:  # how long after its event each written value became available online
            event_us = fresh.column(FEATURE_TIMESTAMP).cast(pa.int64()).to_numpy()
            newest = pc.max(table.column(FEATURE_TIMESTAMP)).as_py()
            lags.add(name, lag_seconds(event_us, written_at), newest, written_at)
        deleted = _delete_online(store, view, entity, gone) if gone else 0
        probe = [v for v in (state.online_probe or []) if v not in set(gone)]
        last_written = fresh.column(entity).slice(max(0, fresh.num_rows - PROBE_ENTITIES)).to_pylist()
        state.online_probe = (last_written if fresh.num_rows else probe) or None
        held.check()
        if state.computed_until:
            start = (
                datetime.fromisoformat(state.materialized_until)
                if state.materialized_until
                else pc.min(table.column(FEATURE_TIMESTAMP)).as_py()
            )
            end = datetime.fromisoformat(state.computed_until)
            store.registry.apply_materialization(view, store.project, start, end, commit=True)
        state.materialized_until = state.computed_until
        state.online_entities = pc.count_distinct(entities).as_py()  # all of them are online
        state.save(storage)
        storage.delete(stale_key(name))  # after the state: a run killed in between rewrites them again
    return Materialized(
        name,
        written,
        state.materialized_until,
        _lag(state.computed_until, state.materialized_until),
        round(time.perf_counter() - t0, 3),
        deleted,
    )


def run_materialize_step(config_json: str) -> list[dict]:
    """Entrypoint inside the pipeline step (the Redis connection string comes from its environment)."""
    import os

    from kfloop.step import open_step

    config, storage = open_step(config_json)
    out = [asdict(r) for r in materialize(config, storage, os.environ)]
    for r in out:  # JSON has no infinity: -1 means "never materialized"
        r["lag_seconds"] = r["lag_seconds"] if r["lag_seconds"] != float("inf") else -1.0
    return out
