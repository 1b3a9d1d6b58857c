"""What must hold after every soak run, successful or not (read without faults, straight from the workspace).

- **lake**: every file a manifest names exists with its row count and SHA-256; the raw dataset holds each batch's
  rows exactly once, as generated (row hashes), or none of them (a run that failed before its commit), and all of
  every successful run's; the clean dataset holds exactly the rows of the raw commits it says it validated.
- **features**: each offline table has one row per (entity, event time), its state's ``computed_until`` is its
  newest event; after a successful run it equals a fresh computation from the clean dataset.
- **online store**: after a successful run Redis holds exactly one row per entity of each view (no entity that has
  no offline row), with the values of the entity's newest offline row.
- **registry**: every version folder has its card (the commit point) and every file the card lists, with its
  checksum; ``stages.json`` lists every committed version and only those, and its champion is one of them.
- **training sets**: ``latest.json`` and every manifest point to splits that exist and match the content hash.
- **leases**: after a successful run no lease is left held.

Each check returns violations as sentences naming the lane, the object and what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kfloop import lake, layout
from kfloop.components.features import compute_features
from kfloop.config import Config
from kfloop.config.features import FEATURE_TIMESTAMP
from kfloop.feature_repo.state import load_state
from kfloop.feature_repo.store import open_store
from kfloop.storage import LocalStorage, Storage
from kfloop.storage.lease import holder
from tests.soak.data import Batch, plain_frame, row_hashes
from tests.soak.pipeline import MODEL, Lane

_VERSION_KEY = re.compile(r"/(v\d+)/(.+)$")


def _read_dataset(storage: Storage, manifest: lake.Manifest, where: str, out: list[str]) -> pd.DataFrame:
    """All rows of ``manifest`` (every file checked against its recorded rows and SHA-256)."""
    tables = []
    for f in manifest.files:
        try:
            body = storage.read_bytes(f.key)
        except FileNotFoundError:
            out.append(f"{where}: manifest names {f.key}, which does not exist")
            continue
        if hashlib.sha256(body).hexdigest() != f.sha256:
            out.append(f"{where}: {f.key} does not match the SHA-256 in the manifest")
        table = pq.read_table(pa.BufferReader(body))
        if table.num_rows != f.rows:
            out.append(f"{where}: {f.key} has {table.num_rows} rows, the manifest says {f.rows}")
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=["transaction_id"])
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _by_source(lane: Lane) -> dict[str, Batch]:
    return {str(b.path): b for b in lane.batches}


def check_lake(lane: Lane, succeeded: set[int]) -> list[str]:
    out: list[str] = []
    storage, dataset = lane.direct, lane.config.source.dataset
    where = f"{lane.name} lake {dataset}"
    manifest = lake.read_manifest(storage, dataset)
    if manifest is None:
        missing = sorted(b.run for b in lane.batches if b.run in succeeded)
        return [f"{where}: no manifest, yet runs {missing} succeeded"] if missing else []
    raw = _read_dataset(storage, manifest, where, out)
    ids = raw["transaction_id"]
    dup = ids[ids.duplicated()]
    if len(dup):
        out.append(f"{where}: {len(dup)} duplicated rows, e.g. {list(dup[:3])}")
    expected = {tx: h for b in lane.batches for tx, h in b.rows.items()}
    unknown = set(ids) - set(expected)
    if unknown:
        out.append(f"{where}: {len(unknown)} rows of no batch, e.g. {sorted(unknown)[:3]}")
    present = set(ids)
    for b in lane.batches:
        have = len(present & b.rows.keys())
        if have not in (0, len(b.rows)):
            out.append(f"{where}: batch of run {b.run} partly there ({have} of {len(b.rows)} rows)")
        elif have == 0 and b.run in succeeded:
            out.append(f"{where}: the rows of run {b.run} are missing, yet the run succeeded")
    if len(raw):
        got = row_hashes(plain_frame(raw.drop_duplicates("transaction_id")))
        changed = [tx for tx, h in got.items() if tx in expected and expected[tx] != h]
        if changed:
            out.append(f"{where}: {len(changed)} rows differ from the generated ones, e.g. {changed[:3]}")
    out += _check_clean(lane, manifest)
    return out


def _check_clean(lane: Lane, raw: lake.Manifest) -> list[str]:
    out: list[str] = []
    storage, name = lane.direct, layout.clean_dataset(lane.config.source.dataset)
    where = f"{lane.name} lake {name}"
    clean = lake.read_manifest(storage, name)
    if clean is None or not clean.runs:
        return out
    rows = _read_dataset(storage, clean, where, out)
    ids = rows["transaction_id"]
    if ids.duplicated().any():
        out.append(f"{where}: {int(ids.duplicated().sum())} duplicated rows")
    commits = clean.runs[-1].get("input_commits")
    if not isinstance(commits, int) or commits > len(raw.runs):
        return [*out, f"{where}: its last run validated {commits!r} raw commits; the raw dataset has {len(raw.runs)}"]
    sources = _by_source(lane)
    want: set[str] = set()
    for run in raw.runs[:commits]:
        batch = sources.get(str(run.get("source")))
        if batch is None:
            out.append(f"{where}: raw commit {run.get('run_id')} has unknown source {run.get('source')}")
        elif run.get("rows_written"):
            want |= batch.rows.keys()
    if set(ids) != want:
        lost, extra = sorted(want - set(ids)), sorted(set(ids) - want)
        out.append(f"{where}: rows lost {len(lost)} (e.g. {lost[:3]}), extra {len(extra)} (e.g. {extra[:3]})")
    return out


def _offline(storage: Storage, view: str) -> pd.DataFrame | None:
    try:
        return pq.read_table(pa.BufferReader(storage.read_bytes(layout.offline_key(view)))).to_pandas()
    except FileNotFoundError:
        return None


def _sorted(frame: pd.DataFrame, entity: str) -> pd.DataFrame:
    return frame.sort_values([entity, FEATURE_TIMESTAMP], kind="stable").reset_index(drop=True)


def _fresh_features(lane: Lane) -> dict[str, pd.DataFrame]:
    """Every view computed from scratch from a copy of the clean dataset (same config, a scratch workspace)."""
    name = layout.clean_dataset(lane.config.source.dataset)
    manifest = lake.read_manifest(lane.direct, name)
    with tempfile.TemporaryDirectory(prefix="kfloop-soak-fresh-") as tmp:
        scratch = LocalStorage(Path(tmp))
        if manifest is not None:
            for f in manifest.files:
                scratch.write_bytes(f.key, lane.direct.read_bytes(f.key))
            scratch.write_bytes(layout.manifest_key(name), lane.direct.read_bytes(layout.manifest_key(name)))
        compute_features(lane.config, scratch)
        return {v.name: frame for v in lane.config.features.views if (frame := _offline(scratch, v.name)) is not None}


def check_features(lane: Lane, last_ok: bool) -> list[str]:
    out: list[str] = []
    fresh = _fresh_features(lane) if last_ok else {}
    for view in lane.config.features.views:
        where = f"{lane.name} features/{view.name}"
        table = _offline(lane.direct, view.name)
        if table is None:
            if last_ok:
                out.append(f"{where}: no offline table after a successful run")
            continue
        keys = table[[view.entity, FEATURE_TIMESTAMP]]
        if keys.duplicated().any():
            out.append(f"{where}: {int(keys.duplicated().sum())} rows repeat an (entity, event time)")
        state = load_state(lane.direct, view.name)
        newest = table[FEATURE_TIMESTAMP].max()
        if state.computed_until is None or pd.Timestamp(state.computed_until) != newest:
            out.append(f"{where}: state computed_until {state.computed_until} but the newest row is {newest}")
        if last_ok:
            want = fresh.get(view.name)
            if want is None:
                out.append(f"{where}: a fresh computation made no table")
                continue
            try:
                pd.testing.assert_frame_equal(
                    _sorted(table, view.entity), _sorted(want[table.columns], view.entity), check_exact=False, rtol=1e-9
                )
            except (AssertionError, KeyError) as err:
                first = str(err).strip().splitlines()
                out.append(f"{where}: differs from a fresh computation: {' '.join(first[:4])}")
    return out


def _plain(value: object) -> object:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    with contextlib.suppress(TypeError, ValueError):
        if pd.isna(value):
            return None
    return value.item() if hasattr(value, "item") else value


def _same(a: object, b: object) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
    return a == b


def check_online(lane: Lane, redis_client: object) -> list[str]:
    """Online == the newest offline row of every entity, and nothing else online (after a successful run)."""
    out: list[str] = []
    config: Config = lane.config
    latest: dict[str, pd.DataFrame] = {}
    for view in config.features.views:
        table = _offline(lane.direct, view.name)
        if table is None:
            return [f"{lane.name} online: no offline table for {view.name}"]
        table = table.sort_values(FEATURE_TIMESTAMP, kind="stable")
        latest[view.name] = table.groupby(view.entity).tail(1).set_index(view.entity)
    store = open_store(config, lane.direct, lane.environ)
    service = store.get_feature_service(config.features.service)
    views = config.features.views
    n = max(len(latest[v.name]) for v in views)
    keys = {v.name: list(latest[v.name].index) for v in views}
    rows = [{v.entity: keys[v.name][i % len(keys[v.name])] for v in views} for i in range(n)]
    got = store.get_online_features(features=service, entity_rows=rows).to_dict()
    for v in views:
        bad = []
        for i, row in enumerate(rows):
            entity = row[v.entity]
            for f in v.feature_names():
                if not _same(got[f][i], latest[v.name].at[entity, f]):
                    bad.append(f"{entity}.{f}: online {got[f][i]!r}, newest offline {latest[v.name].at[entity, f]!r}")
        if bad:
            out.append(f"{lane.name} online {v.name}: {len(bad)} values differ from the newest offline row: {bad[:2]}")
    project = layout.feast_project(config).encode()
    counts = dict.fromkeys((v.name for v in views), 0)
    for key in redis_client.scan_iter(count=1000):  # type: ignore[attr-defined]
        if key.endswith(project):
            fields = set(redis_client.hkeys(key))  # type: ignore[attr-defined]
            for v in views:
                counts[v.name] += f"_ts:{v.name}".encode() in fields
    for v in views:
        if counts[v.name] != len(latest[v.name]):
            out.append(
                f"{lane.name} online {v.name}: {counts[v.name]} entities in Redis, {len(latest[v.name])} offline"
            )
    return out


def check_registry(lane: Lane) -> list[str]:
    out: list[str] = []
    storage = lane.direct
    prefix = layout.registry_prefix(MODEL)
    where = f"{lane.name} registry/{MODEL}"
    folders: dict[str, set[str]] = {}
    for key in storage.list(f"{prefix}/"):
        m = _VERSION_KEY.search(key[len(prefix) :])
        if m:
            folders.setdefault(m[1], set()).add(m[2])
    committed = set()
    for version, files in sorted(folders.items()):
        if layout.CARD_FILE not in files:
            out.append(f"{where}/{version}: a half-written version: {len(files)} files and no {layout.CARD_FILE}")
            continue
        committed.add(version)
        card = json.loads(storage.read_text(layout.model_card_key(MODEL, version)))
        for rel, digest in card.get("files", {}).items():
            key = f"{layout.model_version_prefix(MODEL, version)}/{rel}"
            try:
                body = storage.read_bytes(key)
            except FileNotFoundError:
                out.append(f"{where}/{version}: the card lists {rel}, which does not exist")
                continue
            if hashlib.sha256(body).hexdigest() != digest:
                out.append(f"{where}/{version}: {rel} does not match its checksum in the card")
    try:
        stages = json.loads(storage.read_text(layout.stages_key(MODEL)))
    except FileNotFoundError:
        return out + ([f"{where}: versions {sorted(committed)} but no stages.json"] if committed else [])
    listed = set(stages["versions"])
    if listed - committed:
        out.append(f"{where}: stages.json lists {sorted(listed - committed)}, which have no card")
    if committed - listed:
        out.append(f"{where}: versions {sorted(committed - listed)} are committed (card) but not in stages.json")
    champion = stages.get("champion")
    if champion is not None and (champion not in listed or stages["versions"].get(champion) != "champion"):
        out.append(f"{where}: champion {champion} is not a version whose stage is champion")
    return out


def check_training_sets(lane: Lane) -> list[str]:
    out: list[str] = []
    storage, service = lane.direct, lane.config.features.service
    prefix = layout.training_set_prefix(service)
    where = f"{lane.name} {prefix}"
    manifests = [k for k in storage.list(f"{prefix}/") if k.endswith("/manifest.json")]
    for key in manifests:
        body = json.loads(storage.read_text(key))
        digest = hashlib.sha256()
        for split in layout.SPLITS:
            try:
                digest.update(storage.read_bytes(layout.split_key(service, body["run_id"], split)))
            except FileNotFoundError:
                out.append(f"{where}: {key} has no {split} split")
        if digest.hexdigest() != body["content_hash"]:
            out.append(f"{where}: the splits of {body['run_id']} do not match the manifest's content hash")
    try:
        latest = json.loads(storage.read_text(layout.latest_key(prefix)))
    except FileNotFoundError:
        return out
    if layout.training_set_manifest_key(service, latest["run_id"]) not in manifests:
        out.append(f"{where}: latest.json names {latest['run_id']}, which has no manifest")
    return out


def lease_keys(config: Config) -> list[str]:
    dataset = config.source.dataset
    keys = [layout.lake_lock_key(dataset), layout.lake_lock_key(layout.clean_dataset(dataset))]
    keys += [layout.view_lease_key(v.name) for v in config.features.views]
    return [*keys, f"{layout.registry_prefix(MODEL)}/_lease"]


def check_leases(lane: Lane) -> list[str]:
    out = []
    for key in lease_keys(lane.config):
        top = holder(lane.direct, key)
        if top is not None and not top.released:
            out.append(f"{lane.name} {key}: still held by {top.owner} ({top.where}) after a successful run")
    return out


def check_lane(lane: Lane, succeeded: set[int], last_ok: bool, redis_client: object) -> list[str]:
    """Every invariant of ``lane``; ``last_ok``: whether the run just finished succeeded."""
    out = check_lake(lane, succeeded) + check_features(lane, last_ok)
    out += check_registry(lane) + check_training_sets(lane)
    if last_ok:
        out += check_online(lane, redis_client) + check_leases(lane)
    return out
