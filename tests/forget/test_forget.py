"""`kfloop forget`: 0 traces in every store (SQLite and Redis online stores, a local and an S3 workspace), other
entities' data untouched, --dry-run changes nothing, the audit record, and a re-ingest does not revive the entity."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kfloop import lake, layout
from kfloop.audit import read, verify
from kfloop.cli import app
from kfloop.components.ingest import ingest
from kfloop.config import config_to_json, parse_config
from kfloop.errors import ConfigError
from kfloop.forget import forget, parse_target
from kfloop.forget.search import traces
from kfloop.storage import S3Storage
from kfloop.stream.state import history_key
from tests.feature_repo.harness import redis_backend
from tests.forget.conftest import ERASED, OTHER, Built, snapshot, workspace_copy

#: Objects an erasure may change besides the data files it reports: commit points, leases, state, audit.
BOOKKEEPING = ("/_manifest.json", "/_lock/", ".state.json", ".lease/", "manifest.json", "latest.json")


def _bookkeeping(key: str) -> bool:
    return key.startswith(("audit/", "forget/")) or key == "feast/online.db" or any(b in key for b in BOOKKEEPING)


def _online_rows(root: Path, without: bytes | None = None) -> dict[str, list]:
    conn = sqlite3.connect(root / "feast" / "online.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: [r for r in conn.execute(f'SELECT * FROM "{t}" ORDER BY entity_key, feature_name') if r[0] != without]
            for t in tables
        }
    finally:
        conn.close()


def _clean_rows(root: Path, config, customer: str) -> pd.DataFrame:
    from kfloop.storage import LocalStorage

    storage = LocalStorage(root)
    manifest = lake.read_manifest(storage, layout.clean_dataset(config.source.dataset))
    frame = pd.concat([t.to_pandas() for t in lake.iter_dataset(storage, manifest, 100_000)])
    return frame[frame["customer_id"] == customer].sort_values("transaction_id").reset_index(drop=True)


def test_parse_target_names_the_mistake(built: Built, tmp_path: Path) -> None:
    config, _ = workspace_copy(built, tmp_path / "ws")
    assert parse_target(config, f"customer_id={ERASED}").value == ERASED
    with pytest.raises(ConfigError, match=r"not an entity key.*customer_id, merchant_id"):
        parse_target(config, "amount=3")
    with pytest.raises(ConfigError, match="expected ENTITY_KEY=VALUE"):
        parse_target(config, ERASED)


def test_dry_run_changes_nothing(built: Built, tmp_path: Path) -> None:
    config, storage = workspace_copy(built, tmp_path / "ws")
    before = snapshot(tmp_path / "ws")
    report = forget(config, storage, f"customer_id={ERASED}", environ={}, dry_run=True)
    assert snapshot(tmp_path / "ws") == before
    stores = {(s.store, s.name): s for s in report.stores}
    assert stores[("lake", "transactions")].rows_removed > 0 and stores[("online", "sqlite")].keys_deleted > 0
    assert [m["version"] for m in report.models] == ["v1"]
    assert not storage.list("forget/")
    assert not any(r["action"] == "forget.erase" for r in read(storage))


def _plant_local_run_copies(root: Path) -> list[str]:
    """What local runs leave in a local workspace besides its stores, as they leave it: kfp.local's artifacts of a
    `kfloop run` (byte copies of the quarantine files and the quality report, named by output, no extension) and a
    `kfloop validate --input` scratch workspace (its own lake, quarantine and reports). Returns the planted keys."""
    run = root / "pipeline_root" / "fraud-demo-training-2026-03-02-00-00-00-000000"
    (report,) = [p for p in (root / "reports/transactions/quality").glob("*.json") if p.name != "latest.json"]
    copies = {
        "ingest-component/quarantine": next((root / "quarantine/transactions").glob("*.parquet")),
        "validate-component/quarantine": next((root / "quarantine/transactions_contract").glob("*.parquet")),
        "validate-component/report": report,
        "validate-component/report_html": report.with_suffix(".html"),
        "validate-component/report_md": report.with_suffix(".md"),
    }
    for name, src in copies.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, run / name)
    scratch = root / "adhoc" / "20260302T000000Z-abcdef"
    for folder in ("lake", "quarantine", "reports"):
        shutil.copytree(root / folder, scratch / folder)
    return [p.relative_to(root).as_posix() for p in (*run.rglob("*"), *scratch.rglob("*")) if p.is_file()]


def _mentions(path: Path, value: str) -> int:
    """Cells (any column of a Parquet file) or text holding ``value`` as a whole token (not inside a run id such
    as ``…25bddc-00004``): independent of kfloop's own search."""
    token = re.compile(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])")
    data = path.read_bytes()
    if data[:4] == b"PAR1":
        table = pq.read_table(path)
        return sum(bool(token.search(str(v))) for c in table.columns for v in c.to_pylist() if v is not None)
    return len(token.findall(data.decode("utf-8", "replace")))


def test_forget_leaves_no_trace_and_others_untouched(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    config, storage = workspace_copy(built, root)
    target = parse_target(config, f"customer_id={ERASED}")
    planted = _plant_local_run_copies(root)
    assert sum(_mentions(root / k, ERASED) for k in planted if k.startswith("pipeline_root/")) > 0
    before = snapshot(root)
    found = traces(config, storage, target, {})
    assert found["artifacts"] > 0 and found["adhoc"] > 0, found
    cfg_path = tmp_path / "kfloop.json"
    cfg_path.write_text(config_to_json(config))
    out = CliRunner().invoke(app, ["forget", f"customer_id={ERASED}", "-c", str(cfg_path), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    stores = ("lake", "quarantine", "features", "training_sets", "adhoc", "inference_log", "artifacts", "online")
    assert traces(config, storage, target, {}) == dict.fromkeys((*stores, "stream_state", "text"), 0)
    assert {k: _mentions(root / k, ERASED) for k in planted if (root / k).exists()} == dict.fromkeys(
        [k for k in planted if (root / k).exists()], 0
    )
    # what the report names changed; every other file is byte-identical (new part files are the rewrites)
    named = {k for s in report["stores"] for k in (*s["files_rewritten"], *s["files_deleted"])}
    after = snapshot(root)
    for key, data in before.items():
        if key not in named and not _bookkeeping(key):
            assert after.get(key) == data, key
    assert {s["store"] for s in report["stores"]} >= {"lake", "quarantine", "features", "online", "training_sets"}
    # another customer's rows and online values are value-identical
    pd.testing.assert_frame_equal(_clean_rows(built.root, config, OTHER), _clean_rows(root, config, OTHER))
    erased_key = sqlite_key(config, storage, target)
    assert _online_rows(built.root, erased_key) == _online_rows(root)
    assert report["trained_on_erased_data"][0]["training_set_run"] == built.training_run
    # one audit record, the value only as a keyed hash
    (record,) = [r for r in read(storage) if r["action"] == "forget.erase"]
    assert record["subject"]["entity_key"] == "customer_id" and len(record["subject"]["value_hmac"]) == 64
    assert verify(storage).ok
    for key in (*storage.list("audit/"), *storage.list("forget/")):
        assert ERASED.encode() not in storage.read_bytes(key), key
    # a second erasure finds nothing left
    again = forget(config, storage, target, environ={})
    assert not [s for s in again.stores if s.touched]


def sqlite_key(config, storage, target) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return serialize_entity_key(
        EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=target.text)]),
        entity_key_serialization_version=3,
    )


def test_reingest_does_not_revive(built: Built, tmp_path: Path) -> None:
    config, storage = workspace_copy(built, tmp_path / "ws")
    target = parse_target(config, f"customer_id={ERASED}")
    forget(config, storage, target, environ={})
    assert ingest(config, storage, source_uri=str(built.source)).already_ingested
    # the same rows again in a changed file (one new row of another customer): the erased rows are dropped
    text = pd.read_csv(built.source, dtype=str, keep_default_na=False)
    extra = text[text["customer_id"] == OTHER].tail(1).assign(transaction_id="tx-999999999")
    extra = extra.assign(event_timestamp="2027-01-01T00:00:00Z", hour_of_day="0")
    changed = tmp_path / "again.csv"
    pd.concat([text, extra]).to_csv(changed, index=False)
    result = ingest(config, storage, source_uri=str(changed))
    assert result.rows_erased == int((text["customer_id"] == ERASED).sum())
    assert result.rows_written == 1
    found = traces(config, storage, target, {})
    assert found["lake"] == 0 and found["quarantine"] == 0, found


def test_forget_on_redis_with_stream_state(built: Built, tmp_path: Path, redis_server) -> None:
    backend = redis_backend(redis_server)
    redis_server.flush()

    def edit(data: dict) -> None:
        data["stream"] = {"redis": {"url": f"redis://{redis_server.address}/0"}}

    config, storage = workspace_copy(built, tmp_path / "ws", backend, edit)
    from tests.feature_repo.harness import Loop

    loop = Loop(tmp_path / "ws", backend, config, storage)
    loop.materialize()  # a fresh (wiped) online store: every entity is written again
    client = redis_server.client()
    project = config.project
    for customer in (ERASED, OTHER):
        history = history_key(project, "customer_activity", json.dumps(customer))
        client.set(history, b"[]")
        client.set(history + ":v", b"1")
    target = parse_target(config, f"customer_id={ERASED}")
    before = {k: client.dump(k) for k in client.keys("*")}
    report = forget(config, storage, target, environ=backend.environ)
    stores = {s.store: s for s in report.stores}
    assert stores["online"].keys_deleted == 1 and stores["stream_state"].keys_deleted == 2
    assert sum(traces(config, storage, target, backend.environ).values()) == 0
    after = {k: client.dump(k) for k in client.keys("*")}
    assert len(before) - len(after) == 3
    assert all(after[k] == v for k, v in before.items() if k in after)  # the other keys value-identical
    assert client.exists(history_key(project, "customer_activity", json.dumps(OTHER)))


def test_forget_on_s3(built: Built, tmp_path: Path, s3_client, bucket: str, moto_endpoint: str, redis_server) -> None:
    backend = redis_backend(redis_server)
    redis_server.flush()
    local, _ = workspace_copy(built, tmp_path / "ws", backend)
    storage = S3Storage(s3_client, bucket, prefix="ws")
    for path in sorted((tmp_path / "ws").rglob("*")):
        key = path.relative_to(tmp_path / "ws").as_posix()
        if path.is_file() and not key.startswith("feast/"):
            storage.upload_file(path, key)
    data = local.model_dump(mode="json")
    data["storage"] = {
        "type": "s3",
        "endpoint": moto_endpoint,
        "bucket": bucket,
        "prefix": "ws",
        "secure": False,
        "access_key": {"env": "AWS_ACCESS_KEY_ID"},
        "secret_key": {"env": "AWS_SECRET_ACCESS_KEY"},
    }
    config = parse_config(data, "s3 test")
    target = parse_target(config, f"customer_id={ERASED}")
    before = {k: storage.read_bytes(k) for k in storage.list("lake/transactions_clean/data/")}
    report = forget(config, storage, target, environ=backend.environ)
    assert report.rows_removed > 0
    assert sum(traces(config, storage, target, backend.environ).values()) == 0
    rewritten = {k for s in report.stores for k in s.files_rewritten}
    for key, data_bytes in before.items():
        if key not in rewritten:
            assert storage.read_bytes(key) == data_bytes, key
    manifest = lake.read_manifest(storage, "transactions_clean")
    assert manifest is not None and all(storage.exists(f.key) for f in manifest.files)
    assert (
        sum(
            pq.ParquetFile(storage.local_path(f.key) or _tmp(storage, f.key, tmp_path)).metadata.num_rows
            for f in manifest.files
        )
        == manifest.rows
    )


def _tmp(storage, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    storage.download_file(key, path)
    return path
