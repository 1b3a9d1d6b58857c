"""Retention removes exactly what is past its period: lake rows at the boundary on both sides (through the lake's
commit), inference-log rows, training sets (never a set a live model version was trained on), reports, quarantine
and monitoring records; a dry run removes nothing, a re-run nothing more; one audit record per run; the CronWorkflow.

One workspace (tests/report/workspace.py, ~2 s) with old objects planted beside the recent ones, shared by the
module: the fixture runs dry run → apply → re-apply once and the tests read what each did."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfloop import audit, lake, layout
from kfloop.config import Config, parse_config
from kfloop.lake_commit import CommitPolicy
from kfloop.registry import ModelRegistry
from kfloop.retention import RetentionResult, apply_retention
from kfloop.serving.log_table import inference_log_schema, log_prefix, read_inference_log
from kfloop.storage import LocalStorage
from tests.report.workspace import fill

LAKE_PERIOD, OTHER_PERIOD = timedelta(days=10), timedelta(days=1)
SECOND = timedelta(seconds=1)


def _id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{hashlib.sha256(at.isoformat().encode()).hexdigest()[:6]}"


def _tree(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _times(storage: LocalStorage, dataset: str, ts: str) -> list[datetime]:
    manifest = lake.read_manifest(storage, dataset)
    assert manifest is not None
    return sorted(t for f in manifest.files for t in pq.read_table(storage.local_path(f.key)).column(ts).to_pylist())


@dataclass
class Run:
    config: Config
    storage: LocalStorage
    root: Path
    now: datetime
    lake_cut: datetime
    other_cut: datetime
    before: dict[str, list[datetime]]
    planted: dict[str, list[str]]
    tree_before_dry: dict[str, str]
    tree_after_dry: dict[str, str]
    audit_before: int
    dry: RetentionResult
    first: RetentionResult
    tree_after_first: dict[str, str]
    second: RetentionResult
    tree_after_second: dict[str, str]


def _plant(config: Config, storage: LocalStorage, root: Path, other: datetime) -> dict[str, list[str]]:
    """Objects on both sides of the non-lake cutoff: (removed, kept) keys per kind."""
    # ids keep whole seconds: the newest second at or after the cutoff stays, the one before it goes
    new = other if other.microsecond == 0 else other.replace(microsecond=0) + SECOND
    old, edge = other - timedelta(days=3), new - SECOND
    removed, kept = [], []
    # reports, quarantine and drift checks named by time-sortable ids
    for at, bucket in ((old, removed), (edge, removed), (new, kept)):
        rid = _id(at)
        for key in (
            layout.report_key("transactions", rid, "json"),
            layout.report_key("transactions", rid, "html"),
            layout.periodic_report_key(config.training.model_name, rid, "html"),
            layout.contract_quarantine_key("transactions", rid),
            layout.quarantine_key("transactions", rid),
            layout.drift_check_key(config.training.model_name, f"{at:%Y%m%dT%H%M%S%fZ}-abc123", "json"),
        ):
            storage.write_text(key, "{}")
            bucket.append(key)
    hours = {old: removed, other - timedelta(hours=1): removed, other: kept}  # the hour holding the cutoff stays
    for at, bucket in hours.items():
        key = layout.request_samples_key(config.training.model_name, f"{at:%Y-%m-%dT%H}", "w1")
        storage.write_text(key, "[]")
        bucket.append(key)
    # the inference log: one partition wholly before the cutoff's day, one straddling it
    schema = inference_log_schema(config)
    stamps = [old, edge, other, other + timedelta(hours=1)]
    for day in sorted({t.date() for t in stamps}):
        rows = [{"timestamp": t, "request_id": f"r-{t.isoformat()}"} for t in stamps if t.date() == day]
        key = f"{log_prefix(config)}/date={day.isoformat()}/f-{day}.parquet"
        buf = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
        storage.write_bytes(key, buf.getvalue().to_pybytes())
    # training sets: old ones (one a candidate was trained on), one at the cutoff (the newest)
    service = config.features.service
    sets = {"old": _id(old), "candidate": _id(old - SECOND), "edge": _id(edge), "new": _id(new)}
    for run in sets.values():
        for split in layout.SPLITS:
            storage.write_bytes(layout.split_key(service, run, split), b"parquet")
        storage.write_text(layout.training_set_manifest_key(service, run), json.dumps({"run_id": run}))
    storage.write_text(layout.latest_key(layout.training_set_prefix(service)), json.dumps({"run_id": sets["new"]}))
    model_dir = root / "candidate"
    model_dir.mkdir()
    (model_dir / "model.bin").write_bytes(b"weights")
    registry = ModelRegistry(storage, config.training.model_name)
    registry.register(model_dir, {"training_set": {"run_id": sets["candidate"]}})  # a candidate: its set stays
    return {"removed": removed, "kept": kept, **{f"set:{k}": [v] for k, v in sets.items()}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("retention")
    config, storage = fill(root)
    ts = config.source.timestamp_column
    clean = _times(storage, "transactions_clean", ts)  # a subset of the raw rows (the second file's)
    lake_cut = clean[len(clean) // 3]  # a row's own time: it stays, the one before it goes
    assert clean[len(clean) // 3 - 1] < lake_cut
    now = lake_cut + LAKE_PERIOD
    other_cut = now - OTHER_PERIOD
    data = config.model_dump(mode="json")
    data["governance"]["retention"] = {
        "lake": "10d",
        "inference_log": "1d",
        "training_sets": "1d",
        "reports": "1d",
        "quarantine": "1d",
        "monitoring": "1d",
    }
    config = parse_config(data, "<retention test>")
    planted = _plant(config, storage, root, other_cut)
    before = {d: _times(storage, d, ts) for d in ("transactions", "transactions_clean")}
    ws = root / "ws"
    policy = CommitPolicy(retire_grace_s=0)  # retired files are swept by the same commit: they are gone at once
    tree = _tree(ws)
    audits = len(audit.read(storage))
    dry = apply_retention(config, storage, dry_run=True, now=now, policy=policy)
    after_dry = _tree(ws)
    first = apply_retention(config, storage, now=now, policy=policy)
    after_first = _tree(ws)
    second = apply_retention(config, storage, now=now, policy=policy)
    return Run(
        config, storage, root, now, lake_cut, other_cut, before, planted, tree, after_dry, audits, dry, first,
        after_first, second, _tree(ws),
    )  # fmt: skip


def _removed(result: RetentionResult, kind: str, dataset: str) -> tuple[int | None, int]:
    entry = next(r for r in result.removed if r.kind == kind and r.dataset == dataset)
    return entry.rows, entry.files


@pytest.mark.parametrize("dataset", ["transactions", "transactions_clean"])
def test_lake_rows_before_the_cutoff_go_and_the_rest_stay(run: Run, dataset: str) -> None:
    ts = run.config.source.timestamp_column
    after = _times(run.storage, dataset, ts)
    expected = [t for t in run.before[dataset] if t >= run.lake_cut]
    assert after == expected  # exactly: every row at or after the cutoff, none before
    assert 0 < len(after) < len(run.before[dataset])
    gone = [t for t in run.before[dataset] if t < run.lake_cut]
    assert max(gone) < run.lake_cut <= min(after)
    rows, files = _removed(run.first, "lake", dataset)
    assert rows == len(gone) and files > 0
    assert _removed(run.dry, "lake", dataset)[0] == len(gone)  # the dry run's count is the real one


def test_the_boundary_row_itself_stays_and_the_one_just_before_goes(run: Run) -> None:
    after = _times(run.storage, "transactions", run.config.source.timestamp_column)
    assert run.lake_cut in after
    just_before = max(t for t in run.before["transactions"] if t < run.lake_cut)
    assert just_before not in after
    manifest = lake.read_manifest(run.storage, "transactions")
    straddling = [f for f in manifest.files if f.event_date == run.lake_cut.date().isoformat()]
    assert straddling and all(f.run_id == run.first.run_id for f in straddling)


def test_removed_lake_files_are_off_storage_and_the_commit_is_recorded(run: Run) -> None:
    for dataset in ("transactions", "transactions_clean"):
        manifest = lake.read_manifest(run.storage, dataset)
        on_disk = set(run.storage.list(layout.data_prefix(dataset) + "/"))
        assert on_disk == {f.key for f in manifest.files}  # nothing orphaned, nothing missing
        record = manifest.runs[-1]
        assert record["kind"] == "retention" and record["run_id"] == run.first.run_id
        assert run.storage.exists(layout.run_record_key(dataset, run.first.run_id))


def test_the_inference_log_keeps_rows_from_the_cutoff_on(run: Run) -> None:
    rows = read_inference_log(run.storage, run.config)["timestamp"].to_pylist()
    assert rows == [run.other_cut, run.other_cut + timedelta(hours=1)]
    assert _removed(run.first, "inference_log", run.config.training.model_name) == (2, 1)


def test_training_sets_past_the_period_go_but_a_live_versions_set_stays(run: Run) -> None:
    service = run.config.features.service
    present = {k.split("/")[2] for k in run.storage.list(layout.training_set_prefix(service) + "/") if k.count("/") > 2}
    assert present == {run.planted["set:candidate"][0], run.planted["set:new"][0]}
    entry = next(r for r in run.first.removed if r.kind == "training_sets")
    assert entry.kept == run.planted["set:candidate"] and entry.files == 2 * (len(layout.SPLITS) + 1)


def test_reports_quarantine_and_monitoring_records_go_exactly_past_the_cutoff(run: Run) -> None:
    assert not [k for k in run.planted["removed"] if run.storage.exists(k)]
    assert all(run.storage.exists(k) for k in run.planted["kept"])
    latest = layout.latest_key(layout.report_prefix("transactions"))
    assert run.storage.exists(latest)  # pointers stay
    assert run.storage.exists(layout.latest_metrics_key(run.config.training.model_name))


def test_a_dry_run_removes_and_records_nothing(run: Run) -> None:
    assert run.tree_after_dry == run.tree_before_dry
    assert run.dry.audit is None and sum(r.files for r in run.dry.removed) > 0


def test_a_second_run_removes_nothing_more(run: Run) -> None:
    assert all(r.files == 0 and r.rows in (0, None) for r in run.second.removed)
    changed = {k for k in run.tree_after_second if run.tree_after_first.get(k) != run.tree_after_second[k]}
    assert {k for k in changed if not k.startswith("audit/")} == set()
    assert set(run.tree_after_first) - set(run.tree_after_second) == set()


def test_each_run_appends_one_audit_record_with_the_counts(run: Run) -> None:
    records = audit.read(run.storage)
    assert len(records) == run.audit_before + 2
    first = records[-2]
    assert first == run.first.audit and first["action"] == "retention.apply"
    counts = first["details"]["counts"]
    assert counts["lake:transactions"]["rows"] == len([t for t in run.before["transactions"] if t < run.lake_cut])
    assert counts["inference_log:" + run.config.training.model_name] == {"rows": 2, "files": 1}
    assert first["details"]["kept"] == {"training_sets:" + run.config.features.service: run.planted["set:candidate"]}
    assert audit.verify(run.storage).ok


def test_no_period_set_removes_nothing(tmp_path: Path) -> None:
    from tests.conftest import demo_config

    storage = LocalStorage(tmp_path)
    result = apply_retention(demo_config(tmp_path), storage)
    assert result.removed == [] and result.audit is None and audit.read(storage) == []


def test_a_zero_period_is_refused() -> None:
    from kfloop.config.retention import RetentionConfig

    with pytest.raises(ValueError, match="longer than 0s"):
        RetentionConfig(lake="0s")


def test_the_retention_cron_workflow_renders() -> None:
    from kfloop.config import load_config
    from kfloop.pipelines.schedules import CONFIG_PATH, render_schedules
    from tests.conftest import REPO

    config = load_config(REPO / "examples" / "fraud" / "kfloop.cluster.yaml")
    doc = yaml.safe_load(render_schedules(config)["retention.yaml"])
    spec = doc["spec"]
    assert spec["schedules"] == ["30 3 * * *"] and spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 3600 and spec["workflowSpec"]["activeDeadlineSeconds"] == 3600
    container = spec["workflowSpec"]["templates"][0]["container"]
    assert container["args"] == ["retention", "apply", "-c", CONFIG_PATH]


def test_the_cli_dry_run_prints_what_would_go(run: Run) -> None:
    from typer.testing import CliRunner

    from kfloop.cli import app

    path = run.root / "kfloop.yaml"
    path.write_text(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
    records = len(audit.read(run.storage))
    result = CliRunner().invoke(app, ["retention", "apply", "-c", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "transactions: would remove" in result.output and "older than 10d" in result.output
    assert len(audit.read(run.storage)) == records
    as_json = CliRunner().invoke(app, ["retention", "apply", "-c", str(path), "--dry-run", "--json"])
    assert json.loads(as_json.output)["dry_run"] is True
