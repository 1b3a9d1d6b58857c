"""Training pipeline: runs end to end under kfp.local; compiled YAML loads back and is up to date."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from kfp import components
from rich.console import Console

from kfloop.cli.summary import features_table
from kfloop.config import load_config, parse_config
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.errors import PipelineError
from kfloop.pipelines.compile import compile_training
from kfloop.pipelines.local import project_python_on_path, run_local
from kfloop.registry import ModelRegistry
from kfloop.storage import LocalStorage
from tests.conftest import REPO, demo_config

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
UNLABELED = 120  # rows of the end-to-end run whose label is not known yet
GOLDEN = REPO / "pipelines" / "compiled" / "training.yaml"


@pytest.mark.slow
def test_local_pipeline_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    data = generate(DemoSpec(rows=3000, seed=11, defects=DefectSpec(wrong_types=0.01)))
    parsable = data.frame[~data.frame["transaction_id"].isin(data.injected["wrong_types"])]
    late = parsable.sample(n=UNLABELED, random_state=5).index  # labels arrive late: not known for these yet
    data.frame["is_fraud"] = data.frame["is_fraud"].astype("Int64").mask(data.frame.index.isin(late))
    write_frame(data.frame, tmp_path / "src.csv", "csv")
    cfg = demo_config(Path("ws"), uri="src.csv")
    run = run_local(cfg, Path("ws"))
    assert run.ingest["rows_written"] + run.ingest["rows_quarantined"] == 3000
    assert run.ingest["rows_quarantined"] == len(data.injected["wrong_types"])
    manifest = json.loads(LocalStorage("ws").read_text("lake/transactions/_manifest.json"))
    assert manifest["rows"] == run.ingest["rows_written"]
    # the step's metrics are KFP artifacts under the pipeline root
    metrics = list(run.pipeline_root.rglob("executor_output.json"))
    assert metrics, "kfp.local wrote no executor output"
    assert run.quality["gate_passed"] and run.quality["rows_in"] == 3000  # ingest rejects count too
    q = run.quality
    assert q["rows_clean"] + q["rows_quarantined"] + q["rows_dropped_duplicates"] == q["rows_in"]
    # unlabeled rows pass the contract and feed the features; the training set leaves them out and says so
    assert all(u["offline_rows"] == q["rows_clean"] for u in run.features)
    assert run.training_set["unlabeled_rows_dropped"] == UNLABELED
    assert sum(run.training_set["rows"].values()) == q["rows_clean"] - UNLABELED
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(features_table(run.features, run.materialized, run.training_set))  # as `kfloop run` prints it
    assert f"{UNLABELED} unlabeled rows dropped" in console.export_text()
    champion = ModelRegistry(LocalStorage("ws"), cfg.training.model_name).champion()
    # deploy ran last: locally a no-op that names the version a running `kfloop serve` switches to
    assert run.deploy["action"] == ("hot-switch" if champion else "none")
    assert run.deploy["version"] == (champion.version if champion else None)
    again = run_local(cfg, Path("ws"))  # ingestion is not cached, and idempotent
    assert again.ingest["already_ingested"] and again.ingest["dataset_rows"] == manifest["rows"]
    # reproducible: the same training-set bytes, and the version trained from them reused with its metrics
    assert again.training_set["content_hash"] == run.training_set["content_hash"]
    assert again.model["reused"] and again.model["version"] == run.model["version"]
    assert again.model["metrics"] == run.model["metrics"] and "reused" not in run.model


@pytest.mark.slow
def test_gate_stops_the_pipeline_and_names_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    write_frame(generate(DemoSpec(rows=500, seed=5)).frame, tmp_path / "src.csv", "csv")
    data = demo_config(Path("ws"), uri="src.csv").model_dump(mode="json")
    data["contract"]["min_rows"] = {"value": 10_000, "severity": "error"}
    with pytest.raises(
        PipelineError, match=r"(?s)data contract gate failed.*table\.min_rows: at least 10,000 clean rows; found 500"
    ):
        run_local(parse_config(data, "test"), Path("ws"))
    assert not (tmp_path / "ws" / "lake" / "transactions_clean").exists()


@pytest.mark.slow
def test_local_pipeline_failure_names_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    cfg = demo_config(Path("ws"), uri="missing.csv")
    with pytest.raises(PipelineError, match=r"missing\.csv: source file not found"):
        run_local(cfg, Path("ws"))


def _compiled(tmp_path: Path) -> dict:
    out = compile_training(
        load_config(CLUSTER_CONFIG), tmp_path / "training.yaml", config_path="examples/fraud/kfloop.cluster.yaml"
    )
    pipeline, platform = yaml.safe_load_all(out.read_text())  # IR + Kubernetes platform spec
    return {**pipeline, "platforms": platform["platforms"]}


def test_compiled_pipeline_loads_and_every_step_is_right(tmp_path: Path) -> None:
    spec = _compiled(tmp_path)
    cfg = load_config(CLUSTER_CONFIG)
    component = components.load_component_from_file(str(tmp_path / "training.yaml"))
    assert component.name == "fraud-demo-training"
    assert set(component.component_spec.inputs or {}) == {"config_json", "source_uri"}
    executors = spec["deploymentSpec"]["executors"]
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == cfg.cluster.image, name
        assert "pip install" not in " ".join(container["command"]), f"{name} installs packages at run time"
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == [
        "deploy-component",
        "evaluate-component",
        "features-component",
        "gate-component",
        "ingest-component",
        "materialize-component",
        "train-component",
        "training-set-component",
        "validate-component",
    ]
    deps = {name: sorted(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {
        "ingest-component": [],
        "validate-component": ["ingest-component"],
        "gate-component": ["validate-component"],
        "features-component": ["gate-component"],  # nothing after the gate runs when it fails
        "materialize-component": ["features-component"],
        "training-set-component": ["materialize-component"],
        "train-component": ["training-set-component"],
        "evaluate-component": ["train-component"],
        "deploy-component": ["evaluate-component"],  # serves the champion evaluate may just have promoted
    }
    champion_in = tasks["deploy-component"]["inputs"]["parameters"]["champion"]["taskOutputParameter"]
    assert champion_in == {"producerTask": "evaluate-component", "outputParameterKey": "Output"}
    assert tasks["deploy-component"]["taskInfo"]["name"] == "deploy (KServe)"
    for name, task in tasks.items():
        assert task["cachingOptions"].get("enableCache", False) is False, name
        if name != "gate-component":  # the gate's failure is deliberate: retrying cannot help
            assert task["retryPolicy"]["maxRetryCount"] == 2, name
    for name, ex in executors.items():
        res = ex["container"]["resources"]
        assert res["resourceCpuRequest"] and res["resourceMemoryLimit"], name
    validate_outputs = spec["components"]["comp-validate-component"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in validate_outputs.items()} == {
        "report": "system.Artifact",
        "report_html": "system.HTML",
        "report_md": "system.Markdown",
        "clean": "system.Dataset",
        "quarantine": "system.Dataset",
        "metrics": "system.Metrics",
    }
    ingest = tasks["ingest-component"]
    assert ingest["cachingOptions"].get("enableCache", False) is False
    assert ingest["retryPolicy"]["maxRetryCount"] == 2
    comp = spec["components"]["comp-ingest-component"]
    assert set(comp["inputDefinitions"]["parameters"]) == {"config_json", "source_uri"}
    assert set(comp["outputDefinitions"]["artifacts"]) == {"run_manifest", "quarantine", "metrics"}
    assert comp["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    res = executors["exec-ingest-component"]["container"]["resources"]
    assert (res["cpuRequest"], res["cpuLimit"]) == (0.5, 2.0)
    assert (res["memoryRequest"], res["memoryLimit"]) == (1024**3 / 1e9, 4 * 1024**3 / 1e9)
    assert spec["defaultPipelineRoot"] == cfg.cluster.pipeline_root
    config_default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert json.loads(config_default)["project"] == cfg.project


def test_compiled_pipeline_mounts_secrets_on_steps_that_use_them(tmp_path: Path) -> None:
    spec = _compiled(tmp_path)
    executors = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    storage_steps = {"ingest", "validate", "features", "materialize", "training-set", "train", "evaluate", "deploy"}
    assert set(executors) == {f"exec-{s}-component" for s in storage_steps}
    s3 = {"AWS_ACCESS_KEY_ID": ("kfloop-s3", "accesskey"), "AWS_SECRET_ACCESS_KEY": ("kfloop-s3", "secretkey")}
    for name, k8s in executors.items():
        envs = {kv["envVar"]: (s["secretName"], kv["secretKey"]) for s in k8s["secretAsEnv"] for kv in s["keyToEnv"]}
        redis = {"REDIS_CONNECTION_STRING": ("kfloop-redis", "connection-string")}
        feast = name in ("exec-materialize-component", "exec-training-set-component")
        assert envs == (s3 | redis if feast else s3), name
    for name in ("exec-materialize-component", "exec-training-set-component"):
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][name]["container"]["env"]}
        assert env["FEAST_S3_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"


def test_committed_compiled_pipeline_is_up_to_date(tmp_path: Path) -> None:
    _compiled(tmp_path)
    fresh = (tmp_path / "training.yaml").read_text()
    assert GOLDEN.read_text() == fresh, "pipelines/compiled/training.yaml is stale: run `make compile`"
    assert fresh.startswith("# GENERATED")
