"""Every state change writes exactly one audit record, with who did it and what it changed, through the stages'
own functions: ingest commits and quarantines, the contract's quarantine, promotions, rejections and rollbacks,
deploys, retrain decisions and config changes. A re-run that changes nothing writes nothing, and a failing trail
stops a change that is not made yet but never undoes one that is."""

from __future__ import annotations

import json
import os
import pwd
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kfloop import lake, layout
from kfloop.audit import read, verify
from kfloop.components.deploy import run_deploy_step
from kfloop.components.ingest import ingest, run_ingest_step
from kfloop.components.validate import validate
from kfloop.config import config_to_json, load_config, parse_config
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.registry import ModelRegistry
from kfloop.storage import LocalStorage, S3Storage
from tests.components.test_deploy import CLUSTER_CONFIG, MODEL, FakeCustomObjects, add_version
from tests.conftest import S3_CREDS, demo_config

USER = f"user:{pwd.getpwuid(os.geteuid()).pw_name}"  # the account of the uid, whatever $USER says


def _source(path: Path, start: datetime | None = None, **defects: float) -> Path:
    """A small demo source file (``start``: its first event time, default the generator's)."""
    spec = DemoSpec(rows=200, seed=5, days=2, defects=DefectSpec(**defects), **({"start": start} if start else {}))
    write_frame(generate(spec).frame, path, "csv")
    return path


def test_the_stages_record_each_state_change_once(audited) -> None:
    storage, model = audited.storage, audited.config.training.model_name
    records = read(storage)[:8]  # the fill's; later tests append after them
    assert [r["action"] for r in records] == [
        *("ingest.commit", "ingest.commit", "validate.quarantine"),
        *("model.promote", "model.reject", "model.promote", "retrain.decision", "retrain.decision"),
    ]
    assert {r["actor"] for r in records} == {USER}
    assert verify(storage).ok

    runs = lake.read_manifest(storage, audited.config.source.dataset).runs
    for record, run in zip(records[:2], runs, strict=True):
        assert record["subject"] == {"dataset": "transactions", "run": run["run_id"]}
        assert record["details"]["rows"] == run["rows_written"] > 0
        assert record["details"]["files"] == run["files"]
        assert record["details"]["sources"] == [{"uri": run["source"], "sha256": run["source_sha256"]}]

    quarantine = records[2]
    rows = pq.read_metadata(audited.root / "ws" / quarantine["details"]["file"]).num_rows
    assert quarantine["details"]["rows"] == rows > 0
    assert 0 < sum(quarantine["details"]["reasons"].values()) <= rows
    assert any(reason.startswith("amount.min") for reason in quarantine["details"]["reasons"])

    stages = [
        (r["action"], r["subject"]["version"], r["details"]["to_stage"], r["details"].get("previous"))
        for r in records[3:6]
    ]
    assert stages == [
        ("model.promote", "v1", "champion", None),
        ("model.reject", "v2", "rejected", None),
        ("model.promote", "v3", "champion", "v1"),
    ]
    assert all(r["subject"]["model"] == model for r in records[3:])

    for record in records[6:]:  # each points at the decision's own record, and agrees with it
        decision = json.loads(storage.read_text(record["details"]["record"]))
        assert (record["details"]["decision"], record["details"]["check_id"]) == (
            decision["decision"],
            decision["check_id"],
        )
    assert [r["details"]["decision"] for r in records[6:]] == ["retrain", "no"]


def test_a_re_run_that_changes_nothing_records_nothing(audited) -> None:
    storage, config = audited.storage, audited.config
    before = len(read(storage))
    assert ingest(config, storage, source_uri=str(audited.root / "source-1.csv")).already_ingested
    validate(config, storage)  # same snapshot, same contract: the previous result
    ModelRegistry(storage, config.training.model_name).promote("v3", "again")  # already champion
    assert len(read(storage)) == before


def test_an_ingest_with_unreadable_rows_records_its_commit_and_its_quarantine(audited) -> None:
    storage, config = audited.storage, audited.config
    before = len(read(storage))
    start = lake.read_manifest(storage, config.source.dataset).watermark
    path = _source(audited.root / "bad.csv", start=_after(start), wrong_types=0.05)
    result = ingest(config, storage, source_uri=str(path))
    assert result.rows_quarantined > 0
    commit, quarantine = read(storage)[before:]
    assert (commit["action"], quarantine["action"]) == ("ingest.commit", "ingest.quarantine")
    assert commit["subject"] == quarantine["subject"] == {"dataset": "transactions", "run": result.run_id}
    assert commit["details"]["rows"] == result.rows_written
    assert quarantine["details"]["unreadable"] == quarantine["details"]["rows"] == result.rows_quarantined
    assert sum(quarantine["details"]["reasons"].values()) == result.rows_quarantined
    assert quarantine["details"]["files"] == [layout.quarantine_key("transactions", result.run_id)]


def _after(watermark: str) -> datetime:
    return datetime.fromisoformat(watermark) + timedelta(hours=1)


def test_a_rollback_and_promotion_in_a_pod_name_its_service_account(audited, in_pod: str) -> None:
    storage = audited.storage
    registry = ModelRegistry(storage, audited.config.training.model_name)
    before = len(read(storage))
    registry.rollback("the canary misbehaved")
    (rollback,) = read(storage)[before:]
    assert rollback["actor"] == in_pod
    assert (rollback["action"], rollback["subject"]["version"]) == ("model.rollback", "v1")
    assert rollback["details"] == {
        "from_stage": "archived",
        "to_stage": "champion",
        "previous": "v3",
        "reason": "the canary misbehaved",
    }
    registry.promote("v3", "fixed")
    (promote,) = read(storage)[before + 1 :]
    assert (promote["actor"], promote["subject"]["version"], promote["details"]["previous"]) == (in_pod, "v3", "v1")
    assert verify(storage).ok


def _break_the_trail(root: Path) -> None:
    """A real fault: a directory where the trail's head object must be (no append can read or replace it)."""
    (root / layout.audit_head_key()).mkdir(parents=True)


def test_a_failed_append_stops_a_promotion_before_it_is_made(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    version = add_version(storage, tmp_path, promote=False)
    _break_the_trail(tmp_path / "ws")
    registry = ModelRegistry(storage, MODEL)
    with pytest.raises(OSError):
        registry.promote(version, "by hand")
    assert registry.champion() is None and registry.get(version).stage == "candidate"
    assert read(storage) == []


def test_a_failed_append_after_a_commit_is_logged_and_the_commit_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = demo_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    _break_the_trail(tmp_path / "ws")
    result = ingest(config, storage, source_uri=str(_source(tmp_path / "s.csv")))
    assert result.rows_written > 0 and not result.already_ingested
    assert lake.read_manifest(storage, config.source.dataset).runs[-1]["run_id"] == result.run_id
    logged = [r for r in caplog.records if r.levelname == "ERROR" and "could not record ingest.commit" in r.message]
    assert len(logged) == 1 and result.run_id in logged[0].message  # the record, to append by hand


def test_a_pipeline_run_records_a_config_change_once(tmp_path: Path, in_pod: str) -> None:
    config = demo_config(tmp_path / "ws")
    storage = LocalStorage(tmp_path / "ws")
    source = _source(tmp_path / "s.csv")

    def run(cfg) -> list[dict]:
        before = len(read(storage))
        run_ingest_step(config_to_json(cfg), str(source), str(tmp_path / "m.json"), str(tmp_path / "q.parquet"))
        return read(storage)[before:]

    first, commit = run(config)
    assert (first["action"], first["actor"], commit["action"]) == ("config.change", in_pod, "ingest.commit")
    assert first["details"]["old_hash"] is None and "+training" in first["details"]["changed"]
    data = config.model_dump(mode="json")
    data["training"]["epochs"] += 1
    data["contract"]["columns"]["amount"]["max"] = 12345.0
    changed = parse_config(data, "changed")
    (second,) = run(changed)  # the same source file: no second commit
    assert second["action"] == "config.change"
    assert second["details"]["old_hash"] == first["details"]["new_hash"] != second["details"]["new_hash"]
    assert sorted(second["details"]["changed"]) == ["contract.columns.amount.max", "training.epochs"]
    assert second["details"]["changed_count"] == 2
    assert run(changed) == []  # unchanged since: nothing
    for record, cfg in ((first, config), (second, changed)):  # each config kept, for the next diff
        assert storage.read_text(record["details"]["config"]) == config_to_json(cfg)
    assert len(run(config)) == 1  # back to the first config: a change again


@pytest.mark.s3
def test_a_deploy_to_the_cluster_is_recorded_once(
    moto_endpoint: str, s3_storage: S3Storage, tmp_path: Path, in_pod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_CREDS.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_CREDS.secret_key)
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    data["storage"] |= {"endpoint": moto_endpoint, "bucket": s3_storage.bucket, "prefix": "ws", "secure": False}
    data["serving"]["canary_traffic_percent"] = None
    config_json = config_to_json(parse_config(data, "cluster test config"))
    api = FakeCustomObjects()
    add_version(s3_storage, tmp_path, promote=True)
    assert [r["action"] for r in read(s3_storage)] == ["model.promote"]
    assert run_deploy_step(config_json, "v1", api=api)["action"] == "created"
    assert run_deploy_step(config_json, "v1", api=api)["action"] == "unchanged"  # nothing changed: no record
    (deploy,) = read(s3_storage, actions=["deploy"])
    assert deploy["actor"] == in_pod
    assert deploy["subject"] == {"model": MODEL, "version": "v1"}
    assert deploy["details"]["target"] == "inferenceservice:kubeflow/fraud-detector"
    assert deploy["details"]["action"] == "created"
    assert deploy["details"]["storage_uri"] == f"s3://{s3_storage.bucket}/ws/registry/{MODEL}/v1/"
    assert verify(s3_storage).ok
