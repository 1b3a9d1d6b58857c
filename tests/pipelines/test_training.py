"""Training pipeline: runs end to end under kfp.local; compiled YAML loads back and is up to date."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from kfp import components
from rich.console import Console

from kfloop.cli.summary import features_table, tables_table
from kfloop.config import load_config, parse_config
from kfloop.config.run_parameters import NAMES, run_parameter_defaults
from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.errors import PipelineError
from kfloop.layout import PIPELINE_ROOT
from kfloop.pipelines.compile import compile_training
from kfloop.pipelines.local import LocalRun, _failure_message, project_python_on_path, run_local
from kfloop.registry import ModelRegistry
from kfloop.storage import LocalStorage
from tests.conftest import REPO, demo_config

CLUSTER_CONFIG = REPO / "examples" / "fraud" / "kfloop.cluster.yaml"
UNLABELED = 120  # rows of the end-to-end run whose label is not known yet
GOLDEN = REPO / "pipelines" / "compiled" / "training.yaml"


def _assert_every_table_reported(run: LocalRun, merchants: int) -> None:
    """Each attribute table's own ingest and gate, next to the main source's, as `kfloop run` prints them."""
    assert run.ingest["dataset"] == "transactions" and run.quality["dataset"] == "transactions"
    assert set(run.tables) == {"merchants"}
    ingested, quality = run.tables["merchants"]["ingest"], run.tables["merchants"]["quality"]
    assert ingested["dataset"] == "merchants" and ingested["rows_written"] == merchants
    assert quality["gate_passed"] and quality["rows_quarantined"] == 1 and quality["rows_clean"] == merchants - 1
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(tables_table(run.tables))
    text = console.export_text()
    assert f"+{merchants} of {merchants} rows read" in text and "1 quarantined" in text
    assert "gate passed" in text


@pytest.mark.slow
def test_local_pipeline_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One run with an attribute table, then a re-run with the run form's parameters (two runs, not four:
    each kfp.local run is a subprocess per step)."""
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    data = generate(DemoSpec(rows=3000, seed=11, defects=DefectSpec(wrong_types=0.01)))
    parsable = data.frame[~data.frame["transaction_id"].isin(data.injected["wrong_types"])]
    late = parsable.sample(n=UNLABELED, random_state=5).index  # labels arrive late: not known for these yet
    data.frame["is_fraud"] = data.frame["is_fraud"].astype("Int64").mask(data.frame.index.isin(late))
    write_frame(data.frame, tmp_path / "src.csv", "csv")
    merchants = sorted(data.frame["merchant_id"].dropna().unique())
    rows = [f"{m},north,{-1 if i == 0 else i}" for i, m in enumerate(merchants)]
    (tmp_path / "merchants.csv").write_text("merchant_id,region,capacity\n" + "\n".join(rows) + "\n")
    table = {**MERCHANTS_TABLE, "contract": {"columns": {"capacity": {"min": 0, "severity": "quarantine"}}}}
    cfg = parse_config(_with_tables(demo_config(Path("ws"), uri="src.csv").model_dump(mode="json"), table), "t")
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
    views = [u for u in run.features if u["view"] != "merchants"]  # the table's own rows: checked below
    assert views and all(u["offline_rows"] == q["rows_clean"] for u in views)
    assert run.training_set["unlabeled_rows_dropped"] == UNLABELED
    assert sum(run.training_set["rows"].values()) == q["rows_clean"] - UNLABELED
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(features_table(run.features, run.materialized, run.training_set))  # as `kfloop run` prints it
    assert f"{UNLABELED} unlabeled rows dropped" in console.export_text()
    _assert_every_table_reported(run, len(merchants))
    champion = ModelRegistry(LocalStorage("ws"), cfg.training.model_name).champion()
    # deploy ran last: locally a no-op that names the version a running `kfloop serve` switches to
    assert run.deploy["action"] == ("hot-switch" if champion else "none")
    assert run.deploy["version"] == (champion.version if champion else None)
    # lineage: every step of the run emitted START and COMPLETE, all children of one pipeline run
    events = [json.loads(line) for p in Path("ws", "lineage").rglob("*.jsonl") for line in p.read_text().splitlines()]
    steps = {e["job"]["name"] for e in events}
    assert {"ingest", "validate", "features", "materialize", "training_set", "train", "evaluate", "deploy"} <= steps
    parents = {e["run"]["facets"]["parent"]["run"]["runId"] for e in events}
    assert len(parents) == 1 and all(e["eventType"] in ("START", "COMPLETE") for e in events)
    # the run form's parameters (as the Kubeflow UI passes them): the run trains with them, on the same data;
    # ingestion is not cached by kfp, and idempotent (reusing a version trained on the same bytes with the same
    # parameters is the train step's own test, tests/components/test_reproducible.py)
    tuned = run_local(cfg, Path("ws"), parameters={"epochs": 2, "learning_rate": 0.01})
    assert tuned.ingest["already_ingested"] and tuned.ingest["dataset_rows"] == manifest["rows"]
    assert tuned.training_set["content_hash"] == run.training_set["content_hash"]
    assert tuned.model["version"] != run.model["version"] and not tuned.model.get("reused")
    card = ModelRegistry(LocalStorage("ws"), cfg.training.model_name).get(tuned.model["version"]).card
    assert card["hyperparameters"]["epochs"] == 2 and card["hyperparameters"]["learning_rate"] == 0.01


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
def test_a_failing_table_gate_stops_the_pipeline_and_names_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    write_frame(generate(DemoSpec(rows=1500, seed=5)).frame, tmp_path / "src.csv", "csv")
    (tmp_path / "merchants.csv").write_text("merchant_id,region,capacity\nm-1,north,10\nm-2,south,-5\n")
    table = {**MERCHANTS_TABLE, "contract": {"columns": {"capacity": {"min": 0, "severity": "quarantine"}}}}
    table["contract"]["min_rows"] = {"value": 5, "severity": "error"}
    data = _with_tables(demo_config(Path("ws"), uri="src.csv").model_dump(mode="json"), table)
    cfg = parse_config(data, "test")
    with pytest.raises(PipelineError) as failed:
        run_local(cfg, Path("ws"), table_uris={"merchants": str(tmp_path / "merchants.csv")})
    message = str(failed.value)
    assert message.startswith("data contract gate failed on table merchants; training did not run:")
    assert "table.min_rows: at least 5 clean rows; found 1" in message
    ws = tmp_path / "ws"
    (broken,) = (ws / "quarantine" / "merchants_contract").glob("*.parquet")  # the table's own quarantine
    assert pq.read_table(broken).column("merchant_id").to_pylist() == ["m-2"]
    assert not (ws / "lake" / "merchants_clean").exists()  # a failed gate publishes no clean dataset
    assert not list((ws / PIPELINE_ROOT).rglob("features-component"))  # features never ran


def test_failure_message_names_each_failed_gate(tmp_path: Path) -> None:
    def report(dataset: str, passed: bool) -> dict:
        check = {"check": "table.min_rows", "severity": "error", "passed": passed, "failed": 0 if passed else 1}
        check |= {"total": 1, "message": "at least 5 clean rows; found 1"}
        return {"dataset": dataset, "gate_passed": passed, "checks": [check]}

    log = tmp_path / "run.log"
    log.write_text("")
    one = _failure_message(
        RuntimeError(), {"": report("transactions", True), "merchants": report("merchants", False)}, log
    )
    assert one.splitlines() == [
        "data contract gate failed on table merchants; training did not run:",
        "  table.min_rows: at least 5 clean rows; found 1 (1 of 1 failing)",
    ]
    both = _failure_message(
        RuntimeError(), {"": report("transactions", False), "merchants": report("merchants", False)}, log
    )
    assert both.splitlines()[:3] == [
        "data contract gates failed; training did not run:",
        "  source (transactions):",
        "    table.min_rows: at least 5 clean rows; found 1 (1 of 1 failing)",
    ]
    assert "  table merchants:" in both.splitlines()
    failed = RuntimeError("Inner task failed: 'ingest-component-2'")
    log.write_text("kfloop.errors.SourceError: merchants.csv: source file not found\n")
    step = _failure_message(failed, {}, log, {"ingest-component-2": "ingest (merchants)"})
    assert step.startswith(
        "step 'ingest (merchants)' (ingest-component-2) failed: merchants.csv: source file not found"
    )


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
    inputs = component.component_spec.inputs or {}
    assert set(inputs) == {"config_json", "source_uri", *NAMES}  # the run form
    defaults = run_parameter_defaults(cfg)
    assert {n: inputs[n].default for n in NAMES} == defaults  # each defaults to the compiled config's value
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert declared["epochs"]["parameterType"] == "NUMBER_INTEGER"
    assert declared["learning_rate"]["parameterType"] == "NUMBER_DOUBLE"
    assert declared["framework"]["parameterType"] == "STRING"
    assert all(declared[n]["description"] for n in ["config_json", "source_uri", *NAMES])
    executors = spec["deploymentSpec"]["executors"]
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == cfg.cluster.image, name
        assert "pip install" not in " ".join(container["command"]), f"{name} installs packages at run time"
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == [
        "config-component",
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
    first = "config-component"  # the run parameters applied and validated: every step reads its config
    assert deps == {
        "config-component": [],
        "ingest-component": [first],
        "validate-component": [first, "ingest-component"],
        "gate-component": ["validate-component"],
        "features-component": [first, "gate-component"],  # nothing after the gate runs when it fails
        "materialize-component": [first, "features-component"],
        "training-set-component": [first, "materialize-component"],
        "train-component": [first, "training-set-component"],
        "evaluate-component": [first, "train-component"],
        "deploy-component": [first, "evaluate-component"],  # serves the champion evaluate may just have promoted
    }
    assert tasks[first]["taskInfo"]["name"] == "config (run parameters)"
    assert "retryPolicy" not in tasks[first]  # a bad parameter fails the same way every time
    champion_in = tasks["deploy-component"]["inputs"]["parameters"]["champion"]["taskOutputParameter"]
    assert champion_in == {"producerTask": "evaluate-component", "outputParameterKey": "Output"}
    assert tasks["deploy-component"]["taskInfo"]["name"] == "deploy (KServe)"
    for name, task in tasks.items():
        assert task["cachingOptions"].get("enableCache", False) is False, name
        if name not in ("gate-component", first):  # their failures are deliberate: retrying cannot help
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
    assert set(comp["inputDefinitions"]["parameters"]) == {"config_json", "source_uri", "table"}
    assert comp["inputDefinitions"]["parameters"]["table"] == {
        "defaultValue": "",
        "isOptional": True,
        "parameterType": "STRING",
    }
    assert "table" not in ingest["inputs"]["parameters"]  # the main source's tasks leave it at "" (no table)
    assert set(comp["outputDefinitions"]["artifacts"]) == {"run_manifest", "quarantine", "metrics"}
    assert comp["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    res = executors["exec-ingest-component"]["container"]["resources"]
    assert (res["cpuRequest"], res["cpuLimit"]) == (0.5, 2.0)
    assert (res["memoryRequest"], res["memoryLimit"]) == (1024**3 / 1e9, 4 * 1024**3 / 1e9)
    assert spec["defaultPipelineRoot"] == cfg.cluster.pipeline_root
    config_default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert json.loads(config_default)["project"] == cfg.project


MERCHANTS_TABLE = {
    "name": "merchants",
    "key": "merchant_id",
    "source": {"uri": "merchants.csv", "columns": {"merchant_id": "string", "region": "string", "capacity": "int64"}},
}


def _with_tables(data: dict, *tables: dict) -> dict:
    data["features"]["tables"] = list(tables)
    return data


def test_every_table_gets_its_ingest_validate_and_gate_in_parallel(tmp_path: Path) -> None:
    base = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    weather = {  # timestamped; called `source` to show its parameter cannot clash with the main `source_uri`
        "name": "source",
        "key": "customer_id",
        "source": {
            "uri": "s3://kfloop/incoming/weather.parquet",
            "timestamp_column": "ts",
            "columns": {"customer_id": "string", "ts": "timestamp", "temp": "float64"},
        },
    }
    cfg = parse_config(_with_tables(base, MERCHANTS_TABLE, weather), "test")
    out = compile_training(cfg, tmp_path / "training.yaml")
    spec, platform = yaml.safe_load_all(out.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v.get("defaultValue") for k, v in params.items() if k not in ("config_json", *NAMES)} == {
        "source_uri": cfg.source.uri,
        "merchants_source_uri": "merchants.csv",
        "source_source_uri": "s3://kfloop/incoming/weather.parquet",
    }
    assert all(p["parameterType"] == "STRING" for k, p in params.items() if k.endswith("source_uri"))
    component = components.load_component_from_file(str(out))
    assert set(component.component_spec.inputs or {}) == {
        "config_json",
        "source_uri",
        *NAMES,
        "merchants_source_uri",
        "source_source_uri",
    }
    tasks = spec["root"]["dag"]["tasks"]
    shown = {t["taskInfo"]["name"]: name for name, t in tasks.items()}
    for table, n in (("merchants", 2), ("source", 3)):  # a component's nth task is <component>-n, in table order
        ingest, validate, gate = (shown[f"{s} ({table})"] for s in ("ingest", "validate", "quality gate"))
        assert (ingest, validate, gate) == (f"ingest-component-{n}", f"validate-component-{n}", f"gate-component-{n}")
        assert tasks[ingest]["dependentTasks"] == ["config-component"]  # in parallel with the main source's ingest
        assert sorted(tasks[validate]["dependentTasks"]) == ["config-component", ingest]
        assert tasks[gate]["dependentTasks"] == [validate]
        for name in (ingest, validate, gate):
            assert tasks[name]["inputs"]["parameters"]["table"] == {"runtimeValue": {"constant": table}}
        uri = tasks[ingest]["inputs"]["parameters"]["source_uri"]
        assert uri == {"componentInputParameter": f"{table}_source_uri"}
        assert tasks[ingest]["retryPolicy"]["maxRetryCount"] == 2
        assert tasks[validate]["inputs"]["artifacts"]["ingest_manifest"]["taskOutputArtifact"]["producerTask"] == ingest
    assert shown["ingest"] == "ingest-component" and "table" not in tasks["ingest-component"]["inputs"]["parameters"]
    assert sorted(tasks["features-component"]["dependentTasks"]) == [
        "config-component",
        "gate-component",
        "gate-component-2",
        "gate-component-3",
    ]  # features wait for every gate: a failing table stops the run before any feature is computed
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for n in (2, 3):  # the tables' steps read and write the workspace too: they get its S3 secrets
        assert {"exec-ingest-component-" + str(n), "exec-validate-component-" + str(n)} <= set(executors)


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
