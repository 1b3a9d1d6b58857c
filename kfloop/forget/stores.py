"""Erasure in each file store of the workspace: lake datasets, quarantine, offline features, inference log,
training sets. Each function returns what it touched (or, with ``dry_run``, would touch) as a :class:`Touched`.

The lake is changed the way every writer changes it: under the dataset's lease (so an overlapping ingest commits
before or after, never in between), the rewritten files are new part files of this run and the manifest is the
commit point; the replaced files are deleted at once, retired ones too (erasure does not wait for the grace
period a recompute gives readers of an older manifest). Other objects are rewritten in place (atomic per object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop import lake, layout
from kfloop.forget.parquet import Hit, erase_rows, kept_rows, scan
from kfloop.forget.target import Target
from kfloop.storage import Storage
from kfloop.storage.lease import lease

#: How long an erasure waits for a dataset or view another run is writing.
LEASE_TIMEOUT_S = 600.0
LEASE_STALE_S = 120.0


@dataclass
class Touched:
    """One store's part of the report."""

    store: str
    name: str
    files_rewritten: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    rows_removed: int = 0
    keys_deleted: int = 0

    @property
    def touched(self) -> bool:
        return bool(self.files_rewritten or self.files_deleted or self.rows_removed or self.keys_deleted)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _times(table: pa.Table, ts: str | None, old: lake.DataFile) -> tuple[object, object]:
    """The rows' event-time range (the old file's when the dataset has no time column)."""
    if ts is None or ts not in table.column_names:
        return old.min_event_time, old.max_event_time
    col = table.column(ts)
    return pc.min(col).as_py(), pc.max(col).as_py()


def erase_dataset(
    storage: Storage, dataset: str, target: Target, ts_column: str | None, run_id: str, tmp: Path, dry_run: bool
) -> Touched:
    """The entity's rows out of one lake dataset (current and retired files), committed by its manifest."""
    out = Touched("lake", dataset)
    key = layout.lake_lock_key(dataset)
    held_lease = lease(
        storage, key, name=f"dataset {dataset}", owner=run_id, timeout_s=LEASE_TIMEOUT_S, stale_after_s=LEASE_STALE_S
    )
    with contextlib.nullcontext() if dry_run else held_lease as held:  # a dry run leaves no lease object behind
        manifest = lake.read_manifest(storage, dataset)
        if manifest is None:
            return out
        live = {f.key: f for f in manifest.files}
        retired = {r.key for r in manifest.retired if storage.exists(r.key)}
        hits = scan(storage, [*live, *sorted(retired)], target, tmp)
        out.rows_removed = sum(h.matched for h in hits if h.key in live)
        if dry_run:
            out.files_rewritten = [h.key for h in hits if h.key in live and h.matched < h.rows]
            out.files_deleted = [h.key for h in hits if h.key not in live or h.matched == h.rows]
            return out
        files = list(manifest.files)
        for n, hit in enumerate(h for h in hits if h.key in live):
            old = live[hit.key]
            kept = kept_rows(hit, target)
            idx = files.index(old)
            if kept.num_rows == 0:
                files.pop(idx)
                continue
            part = tmp / f"part-{n}.parquet"
            pq.write_table(kept, part, compression="zstd")
            lo, hi = _times(kept, ts_column, old)
            held.check()
            new_key = layout.part_key(dataset, old.event_date, run_id, n)
            files[idx] = lake.store_part(storage, part, new_key, old.event_date, run_id, kept.num_rows, lo, hi)
            out.files_rewritten.append(hit.key)
        gone = {h.key for h in hits}
        updated = dataclasses.replace(manifest, files=files, retired=[r for r in manifest.retired if r.key not in gone])
        held.check()
        storage.write_text(layout.manifest_key(dataset), updated.to_json())
        for hit in hits:
            storage.delete(hit.key)
            if hit.key not in live or hit.matched == hit.rows:
                out.files_deleted.append(hit.key)
        return out


def erase_objects(
    storage: Storage, store: str, name: str, keys: list[str], target: Target, tmp: Path, dry_run: bool
) -> tuple[Touched, list[Hit]]:
    """The entity's rows out of Parquet objects rewritten in place (an object left empty is deleted)."""
    out = Touched(store, name)
    hits = scan(storage, keys, target, tmp)
    out.rows_removed = sum(h.matched for h in hits)
    for hit in hits:
        (out.files_deleted if hit.matched == hit.rows else out.files_rewritten).append(hit.key)
        if not dry_run:
            erase_rows(storage, hit, target)
    return out, hits


def erase_view(storage: Storage, view: str, target: Target, run_id: str, tmp: Path, dry_run: bool) -> Touched:
    """One feature view's offline table, stale-entity list and state (its online probe), under the view's lease."""
    from kfloop.feature_repo.state import load_state, view_lease

    out = Touched("features", view)
    with contextlib.nullcontext() if dry_run else view_lease(storage, view, run_id) as held:
        keys = [k for k in (layout.offline_key(view),) if storage.exists(k)]
        hits = scan(storage, keys, target, tmp)
        out.rows_removed = sum(h.matched for h in hits)
        out.files_rewritten = [h.key for h in hits]
        stale = _erase_stale(storage, view, target, tmp, dry_run)
        if stale:
            out.files_rewritten.append(layout.stale_key(view))
        state = load_state(storage, view)
        probe = [v for v in (state.online_probe or []) if v != target.value]
        if state.online_probe is not None and len(probe) != len(state.online_probe):
            out.files_rewritten.append(layout.state_key(view))
        if dry_run:
            return out
        for hit in hits:
            erase_rows(storage, hit, target, check=held.check)
        if hits or probe != (state.online_probe or []):
            state.offline_rows = max(0, state.offline_rows - out.rows_removed)
            state.online_probe = probe if state.online_probe is not None else None
            held.check()
            state.save(storage)
    return out


def _erase_stale(storage: Storage, view: str, target: Target, tmp: Path, dry_run: bool) -> bool:
    key = layout.stale_key(view)
    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(key)))
    except FileNotFoundError:
        return False
    mask = target.mask(table.column("entity"))
    if not pc.any(mask).as_py():
        return False
    if not dry_run:
        buf = pa.BufferOutputStream()
        pq.write_table(table.filter(pc.invert(mask)), buf, compression="zstd")
        storage.write_bytes(key, buf.getvalue().to_pybytes())
    return True


def erase_training_sets(
    storage: Storage, service: str, target: Target, tmp: Path, dry_run: bool
) -> tuple[Touched, list[str]]:
    """Every training set of the service: splits rewritten, their manifests' row counts updated and the erasure
    noted (never the value); returns the runs that held the entity (the models trained on them are listed)."""
    prefix = layout.training_set_prefix(service) + "/"
    keys = [k for k in storage.list(prefix) if k.endswith(".parquet")]
    out, hits = erase_objects(storage, "training_sets", service, keys, target, tmp, dry_run)
    runs: dict[str, int] = {}
    for hit in hits:
        run = hit.key[len(prefix) :].split("/", 1)[0]
        runs[run] = runs.get(run, 0) + hit.matched
    if not dry_run:
        for run, removed in runs.items():
            _note_erasure(storage, service, run, hits, removed)
    return out, sorted(runs)


def _note_erasure(storage: Storage, service: str, run: str, hits: list[Hit], removed: int) -> None:
    key = layout.training_set_manifest_key(service, run)
    try:
        body = json.loads(storage.read_text(key))
    except FileNotFoundError:
        return
    for name in layout.SPLITS:
        split = layout.split_key(service, run, name)
        if any(h.key == split for h in hits) and isinstance(body.get("rows"), dict):
            body["rows"][name] = pq.ParquetFile(_open(storage, split)).metadata.num_rows if storage.exists(split) else 0
    body.setdefault("erasures", []).append({"at": lake.now_iso(), "rows_removed": removed})
    text = json.dumps(body, indent=2)
    storage.write_text(key, text)
    latest = layout.latest_key(layout.training_set_prefix(service))
    try:
        if json.loads(storage.read_text(latest)).get("run_id") == run:
            storage.write_text(latest, text)
    except FileNotFoundError:
        pass


def _open(storage: Storage, key: str) -> pa.BufferReader | str:
    local = storage.local_path(key)
    return str(local) if local is not None else pa.BufferReader(storage.read_bytes(key))
