"""`kfloop submit`: the compiled pipeline uploaded as a version named by its content hash, and a run of it.

The Kubeflow Pipelines API here is :mod:`tests.kfp_api`, a stateful local HTTP server that stands in for the
cluster (no Kubeflow can run here); kfp's own client talks to it unchanged. So idempotency is checked on what
the server holds after each submission: the same package five times is one pipeline with one version; a
changed package adds a version; a submitter that loses a creation race (409) reuses the winner's.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import Config, config_to_json, parse_config
from kfloop.errors import ConfigError, PipelineError
from kfloop.pipelines.compile import compile_training
from kfloop.pipelines.submit import HASH_LENGTH, Package, read_package, run_arguments, submit
from tests.conftest import demo_config
from tests.kfp_api import FakeKfpApi, serve_kfp_api

runner = CliRunner()
RUN = "/apis/v2beta1/runs"


def cluster_config(tmp_path: Path, epochs: int = 20, **cluster: Any) -> Config:
    """The demo config with its workspace in S3, as a cluster's is (submit refuses a local one)."""
    data = demo_config(tmp_path / "ws").model_dump(mode="json")
    data["storage"] = {"type": "s3", "endpoint": "minio-service.kubeflow:9000", "bucket": "kfloop", "prefix": "t"}
    data["training"]["epochs"] = epochs
    data["cluster"] |= cluster
    return parse_config(data, "submit test config")


def package_of(config: Config, path: Path) -> Package:
    return read_package(compile_training(config, path))


@pytest.fixture
def api() -> Iterator[FakeKfpApi]:
    with serve_kfp_api(FakeKfpApi(run_states=("SUCCEEDED",))) as fake:
        yield fake


def test_the_same_package_five_times_is_one_pipeline_with_one_version(api: FakeKfpApi, tmp_path: Path) -> None:
    config = cluster_config(tmp_path, kfp_host=api.url)
    package = package_of(config, tmp_path / "training.yaml")
    results = [submit(config, package) for _ in range(5)]
    assert len(api.pipelines) == 1 and len(api.versions) == 1 and len(api.runs) == 5
    (pipeline,), (version,) = api.pipelines.values(), api.versions.values()
    assert pipeline["name"] == "fraud-demo-training" == package.pipeline_name
    assert version["name"] == f"fraud-demo-training-{package.digest[:HASH_LENGTH]}"  # the first version too
    assert api.packages[version["pipeline_version_id"]] == package.path.read_bytes()
    assert [(r.pipeline_created, r.version_created) for r in results] == [(True, True)] + [(False, False)] * 4
    assert {r.version_id for r in results} == {version["pipeline_version_id"]}
    assert [c.path for c in api.posts()].count("/apis/v2beta1/pipelines/upload_version") == 1
    assert "/apis/v2beta1/pipelines/upload" not in [
        c.path for c in api.calls
    ]  # it would name a version like the pipeline
    refs = [run["pipeline_version_reference"] for run in api.runs.values()]
    assert refs == [{"pipeline_id": pipeline["pipeline_id"], "pipeline_version_id": version["pipeline_version_id"]}] * 5


def test_a_changed_package_adds_a_version_and_the_old_one_is_still_reused(api: FakeKfpApi, tmp_path: Path) -> None:
    config = cluster_config(tmp_path, kfp_host=api.url)
    changed = cluster_config(tmp_path, epochs=5, kfp_host=api.url)
    first = package_of(config, tmp_path / "a" / "training.yaml")
    second = package_of(changed, tmp_path / "b" / "training.yaml")
    recompiled = package_of(config, tmp_path / "c" / "training.yaml")
    assert first.version_name != second.version_name and first.version_name == recompiled.version_name
    a = submit(config, first, run=False)
    b = submit(changed, second, run=False)
    again = submit(config, recompiled, run=False)
    assert len(api.pipelines) == 1 and a.pipeline_id == b.pipeline_id == again.pipeline_id
    assert sorted(v["name"] for v in api.versions.values()) == sorted([first.version_name, second.version_name])
    assert (b.version_created, again.version_created, again.version_id) == (True, False, a.version_id)
    assert api.runs == {}  # --no-run


def test_a_lost_creation_race_reuses_what_the_winner_created(api: FakeKfpApi, tmp_path: Path) -> None:
    """The second submitter's lists miss the first's pipeline and version (as if written just after it
    listed): the server answers its creations 409 and it re-lists and reuses them."""
    config = cluster_config(tmp_path, kfp_host=api.url)
    package = package_of(config, tmp_path / "training.yaml")
    first = submit(config, package, run=False)
    api.stale_lists.update(pipelines=1, pipeline_versions=1)
    second = submit(config, package, run=False)
    assert api.conflicts == 2 and len(api.pipelines) == 1 and len(api.versions) == 1
    assert (second.pipeline_id, second.version_id) == (first.pipeline_id, first.version_id)
    assert (second.pipeline_created, second.version_created) == (False, False)


def test_racing_submissions_leave_one_version(tmp_path: Path) -> None:
    """Four submitters at once, the server answering lists late so they miss each other's writes."""
    with serve_kfp_api(FakeKfpApi(list_delay=0.5, run_states=("SUCCEEDED",))) as api:
        config = cluster_config(tmp_path, kfp_host=api.url)
        package = package_of(config, tmp_path / "training.yaml")
        barrier = threading.Barrier(4)
        results, errors = [], []

        def one() -> None:
            try:
                barrier.wait()
                results.append(submit(config, package, run=False))
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert len(api.pipelines) == 1 and len(api.versions) == 1 and api.conflicts >= 1
    assert len({(r.pipeline_id, r.version_id) for r in results}) == 1 and len(results) == 4
    assert sum(r.pipeline_created for r in results) == sum(r.version_created for r in results) == 1


def test_the_run_gets_the_parameters_given_and_the_cli_prints_ids_and_links(api: FakeKfpApi, tmp_path: Path) -> None:
    """Without --package the CLI compiles --config; the version is the one that config compiles to."""
    config = cluster_config(tmp_path, kfp_host=api.url, kfp_ui_host="https://kubeflow.example.com/pipeline")
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(config))
    args = ["submit", "-c", str(path), "--run-name", "nightly", "--experiment", "tuning", "--wait"]
    args += ["--param", "epochs=3", "--param", "learning_rate=0.01", "--param", "source_uri=s3://b/new.csv"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = [c.body for c in api.posts() if c.path == RUN]
    assert run["runtime_config"]["parameters"] == {"epochs": 3, "learning_rate": 0.01, "source_uri": "s3://b/new.csv"}
    assert run["display_name"] == "nightly"
    (experiment,) = api.experiments.values()
    assert experiment["display_name"] == "tuning" and run["experiment_id"] == experiment["experiment_id"]
    (version,) = api.versions.values()
    assert version["name"] == package_of(config, tmp_path / "same.yaml").version_name
    out = " ".join(result.output.split())
    assert "pipeline fraud-demo-training id pipeline-1 (created)" in out
    assert f"version {version['name']} id version-1 (created)" in out
    assert "https://kubeflow.example.com/pipeline/#/runs/details/run-1" in out and "run succeeded" in out
    again = runner.invoke(app, ["submit", "-c", str(path), "--no-run"])
    assert again.exit_code == 0 and "(reused: same package)" in again.output and len(api.runs) == 1


def test_a_run_that_fails_fails_the_waiting_command(tmp_path: Path) -> None:
    with serve_kfp_api(FakeKfpApi(run_states=("FAILED",))) as api:
        path = tmp_path / "kfloop.json"
        path.write_text(config_to_json(cluster_config(tmp_path, kfp_host=api.url)))
        result = runner.invoke(app, ["submit", "-c", str(path), "--wait"])
    assert result.exit_code == 1 and "run run-1 ended FAILED" in result.output


def test_bad_parameters_and_a_foreign_package_are_refused_before_any_request(tmp_path: Path) -> None:
    config = cluster_config(tmp_path, kfp_host="http://127.0.0.1:9")
    package = package_of(config, tmp_path / "training.yaml")
    with pytest.raises(ConfigError, match=r"--param 'epoch=3'.*epochs.*source_uri"):
        run_arguments(config, package, ["epoch=3"])
    with pytest.raises(ConfigError, match="epochs takes a whole number"):
        run_arguments(config, package, ["epochs=lots"])
    with pytest.raises(ConfigError, match=r"training\.epochs"):  # validated as the config key, naming it
        run_arguments(config, package, ["epochs=0"])
    other = cluster_config(tmp_path, kfp_host="http://127.0.0.1:9").model_dump(mode="json")
    other["project"] = "other"
    with pytest.raises(PipelineError, match="is pipeline 'other-training', this config's is 'fraud-demo-training'"):
        submit(config, package_of(parse_config(other, "other"), tmp_path / "other.yaml"))


def test_the_token_file_is_sent_as_the_bearer_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with serve_kfp_api(FakeKfpApi(token="s3cret", run_states=("SUCCEEDED",))) as api:
        auth = {"mode": "service_account_token", "token_path": str(token)}
        config = cluster_config(tmp_path, kfp_host=api.url, kfp_auth=auth)
        package = package_of(config, tmp_path / "training.yaml")
        submit(config, package)
        assert {c.headers.get("authorization") for c in api.calls} == {"Bearer s3cret"}
        assert len(api.runs) == 1
        with pytest.raises(PipelineError, match=r"refused the health check \(401.*cluster.kfp_auth.mode none"):
            submit(cluster_config(tmp_path, kfp_host=api.url), package)
    missing = cluster_config(tmp_path, kfp_host=api.url, kfp_auth=auth | {"token_path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match=r"cluster\.kfp_auth\.token_path: .*nope does not exist"):
        submit(missing, package)


def test_mode_kubeconfig_sends_the_contexts_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        "contexts: [{name: dev, context: {cluster: k, user: me}}, {name: certs, context: {cluster: k, user: cert}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: me, user: {token: from-kubeconfig}}, {name: cert, user: {username: a, password: b}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with serve_kfp_api(FakeKfpApi(token="from-kubeconfig")) as api:
        config = cluster_config(tmp_path, kfp_host=api.url, kfp_auth={"mode": "kubeconfig"})
        package = package_of(config, tmp_path / "training.yaml")
        submit(config, package, run=False)
        assert len(api.versions) == 1
        basic = cluster_config(tmp_path, kfp_host=api.url, kfp_auth={"mode": "kubeconfig", "kube_context": "certs"})
        with pytest.raises(ConfigError, match="context 'certs' of the kubeconfig has no bearer token"):
            submit(basic, package)


def test_a_multi_user_server_needs_the_profile_namespace(tmp_path: Path) -> None:
    with serve_kfp_api(FakeKfpApi(multi_user=True, run_states=("SUCCEEDED",))) as api:
        package = package_of(cluster_config(tmp_path), tmp_path / "training.yaml")
        with pytest.raises(ConfigError, match=r"multi-user: set cluster\.kfp_namespace"):
            submit(cluster_config(tmp_path, kfp_host=api.url), package)
        submit(cluster_config(tmp_path, kfp_host=api.url, kfp_namespace="team-a"), package)
    (pipeline,), (experiment,) = api.pipelines.values(), api.experiments.values()
    assert pipeline["namespace"] == experiment["namespace"] == "team-a"


def test_the_version_is_what_runs_not_where_it_was_submitted_from(tmp_path: Path) -> None:
    """A port-forward and the ingress (another host, UI host, experiment or CA) submit one version; a change
    to what runs is another."""
    base = package_of(cluster_config(tmp_path, kfp_host="http://localhost:8080"), tmp_path / "a.yaml")
    elsewhere = cluster_config(
        tmp_path,
        kfp_host="https://kubeflow.example.com/pipeline/",
        kfp_ui_host="https://kubeflow.example.com",
        experiment="nightly",
        kfp_ca_cert="/etc/ssl/ca.pem",
    )
    assert package_of(elsewhere, tmp_path / "b.yaml").version_name == base.version_name
    changed = cluster_config(tmp_path, epochs=3, kfp_host="http://localhost:8080")
    assert package_of(changed, tmp_path / "c.yaml").version_name != base.version_name


def test_a_local_workspace_is_not_submitted(tmp_path: Path) -> None:
    data = demo_config(tmp_path / "ws").model_dump(mode="json")
    data["cluster"]["kfp_host"] = "http://localhost:8080"
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(parse_config(data, "local")))
    result = runner.invoke(app, ["submit", "-c", str(path)])
    assert result.exit_code == 2 and "storage: a pipeline on a cluster reads and writes its workspace in S3" in (
        result.output
    )


def test_tls_failure_is_one_line_naming_the_ca_setting(tmp_path: Path) -> None:
    """kfp's own client fails on a TLS error with an AttributeError; submit checks TLS first."""
    with serve_kfp_api(FakeKfpApi()) as fake:  # plain HTTP: a TLS handshake with it fails
        https = fake.url.replace("http://", "https://")
        path = tmp_path / "kfloop.json"
        path.write_text(config_to_json(cluster_config(tmp_path, kfp_host=https)))
        result = runner.invoke(app, ["submit", "-c", str(path)])
    assert result.exit_code == 1, result.output
    assert f"TLS to Kubeflow Pipelines at {https} (cluster.kfp_host) failed" in result.output
    assert "cluster.kfp_ca_cert" in result.output and "Traceback" not in result.output


def test_a_missing_or_unreachable_host_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(cluster_config(tmp_path)))
    result = runner.invoke(app, ["submit", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "error: cluster.kfp_host is not set" in result.output and "Traceback" not in result.output
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{s.getsockname()[1]}"
    path.write_text(config_to_json(cluster_config(tmp_path, kfp_host=host)))
    result = runner.invoke(app, ["submit", "-c", str(path)])
    assert result.exit_code == 1, result.output
    assert f"error: cannot reach Kubeflow Pipelines at {host} (cluster.kfp_host)" in result.output
    assert len(result.output.strip().splitlines()) == 1
