"""The lineage graph of the two-run workspace (file A → v1; files A + B → v2, the lake appends): the back-walk of
each version and the forward walk of each file give exactly the expected nodes, from the events, and the same
nodes from the workspace's records when the events are gone. The expected nodes come from the records the stages
wrote (training-set manifests, the lake manifests), not from the events."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop import lake, layout
from kfloop.cli import app
from kfloop.cli._common import console
from kfloop.components.train import contract_hash
from kfloop.config import config_to_json, parse_config
from kfloop.errors import ModelNotFoundError
from kfloop.lineage.walk import Walker
from kfloop.storage import LocalStorage
from tests.lineage.conftest import MODEL, TwoRuns


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_back(two_runs: TwoRuns, n: int) -> set[tuple]:
    """(kind, name, version) of every node version ``n`` (0 or 1) should have, from the workspace's records."""
    config, storage = two_runs.config, two_runs.storage
    service, dataset = config.features.service, config.source.dataset
    ts = json.loads(storage.read_text(layout.training_set_manifest_key(service, two_runs.training_sets[n])))
    clean = lake.read_manifest(storage, layout.clean_dataset(dataset))
    validated = next(r for r in clean.runs if r["report"] == ts["quality_report"])
    contract = contract_hash(config)
    return {
        ("model", MODEL, two_runs.versions[n]),
        ("training_set", layout.training_set_prefix(service), two_runs.training_sets[n]),
        *(("feature_view", v.name, None) for v in config.features.views),
        ("clean_dataset", layout.dataset_prefix(layout.clean_dataset(dataset)), ts["input_content_hash"]),
        ("contract", contract[:12], contract),
        ("raw_dataset", layout.dataset_prefix(dataset), validated["input_content_hash"]),
        *(("source_file", str(p), _sha(p)) for p in two_runs.sources[: n + 1]),
    }


def _nodes(node) -> set[tuple]:
    return {(n.kind, n.name, n.version) for n in node.walk()}


@pytest.fixture(scope="module")
def without_events(two_runs: TwoRuns, tmp_path_factory: pytest.TempPathFactory) -> Walker:
    """A copy of the workspace with its lineage events removed: every hop falls back to the records."""
    copy = tmp_path_factory.mktemp("no-events") / "ws"
    shutil.copytree(two_runs.storage.root, copy, ignore=shutil.ignore_patterns("lineage"))
    data = two_runs.config.model_dump(mode="json")
    data["storage"] = {"type": "local", "root": str(copy)}
    return Walker(parse_config(data, "copy"), LocalStorage(copy))


@pytest.mark.parametrize("n", [0, 1], ids=["v1: file A", "v2: files A+B"])
def test_the_back_walk_of_each_version_gives_exactly_its_lineage(two_runs: TwoRuns, n: int) -> None:
    walker = Walker(two_runs.config, two_runs.storage)
    back = walker.back(MODEL, two_runs.versions[n])
    assert _nodes(back) == expected_back(two_runs, n)
    assert {node.origin for node in back.walk()} == {"events"}
    assert len(back.walk()) == len(expected_back(two_runs, n))  # no node twice


@pytest.mark.parametrize("n", [0, 1], ids=["v1", "v2"])
def test_without_events_the_records_give_the_same_lineage_and_say_so(
    two_runs: TwoRuns, without_events: Walker, n: int
) -> None:
    assert without_events.index.files == 0
    back = without_events.back(MODEL, two_runs.versions[n])
    assert _nodes(back) == expected_back(two_runs, n)
    assert {node.origin for node in back.walk()} == {"records"}


def test_the_forward_walk_of_each_file_reaches_exactly_the_versions_it_fed(
    two_runs: TwoRuns, without_events: Walker
) -> None:
    a, b = two_runs.sources
    v1, v2 = two_runs.versions
    for walker in (Walker(two_runs.config, two_runs.storage), without_events):
        for name in (str(a), a.name, _sha(a)):  # by path, by trailing name, by content hash
            assert {(m.name, m.version) for m in walker.forward(name).children} == {(MODEL, v1), (MODEL, v2)}
        assert {(m.name, m.version) for m in walker.forward(str(b)).children} == {(MODEL, v2)}
        assert walker.forward("never-ingested.csv").children == []


def test_lines_that_are_no_run_event_are_skipped(two_runs: TwoRuns, without_events: Walker) -> None:
    """A hand-edited, truncated or foreign line in an events file is skipped (the hop falls back to the records),
    never a crash of the walk."""
    events = without_events.storage.root / layout.lineage_events_prefix() / "2026-01-01"
    events.mkdir(parents=True)
    namespace = two_runs.config.governance.lineage.namespace_for(two_runs.config.project)
    lines = [
        "[]",
        '"text"',
        "{}",
        json.dumps({"job": {"namespace": namespace}}),  # no run
        json.dumps({"job": {"namespace": namespace, "name": "train"}, "run": {"runId": "r"}, "eventType": "COMPLETE"}),
        json.dumps({"job": "train", "run": "r"}),
        "{not json",
    ]
    (events / "odd.jsonl").write_text("\n".join(lines) + "\n")
    (events / "binary.jsonl").write_bytes(b"\xff\xfe\n")
    try:
        walker = Walker(without_events.config, without_events.storage)
        assert walker.index.files == 0
        assert _nodes(walker.back(MODEL, two_runs.versions[1])) == expected_back(two_runs, 1)
    finally:
        shutil.rmtree(events)


def test_an_unknown_version_is_a_clear_error(two_runs: TwoRuns) -> None:
    with pytest.raises(ModelNotFoundError, match="no version 'v9'"):
        Walker(two_runs.config, two_runs.storage).back(MODEL, "v9")


def test_the_command_prints_the_tree_or_json_of_the_served_version(
    two_runs: TwoRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 200)  # long paths wrap mid-name in a narrow (CI) console
    cfg = tmp_path / "kfloop.yaml"
    cfg.write_text(config_to_json(two_runs.config))
    runner = CliRunner()
    served = runner.invoke(app, ["lineage", "--json", "-c", str(cfg)])  # no version: the champion (v1)
    assert served.exit_code == 0, served.output
    assert _nodes_of(json.loads(served.output)) == expected_back(two_runs, 0)
    tree = runner.invoke(app, ["lineage", two_runs.versions[1], "-c", str(cfg)], env={"COLUMNS": "200"})
    assert tree.exit_code == 0, tree.output
    for path in two_runs.sources:
        assert path.name in tree.output
    assert "0 of 9 nodes from the workspace's records" in tree.output
    forward = runner.invoke(app, ["lineage", "--source", str(two_runs.sources[1]), "--json", "-c", str(cfg)])
    assert [c["version"] for c in json.loads(forward.output)["children"]] == [two_runs.versions[1]]
    unknown = runner.invoke(app, ["lineage", "v9", "-c", str(cfg)])
    assert unknown.exit_code != 0 and "no version 'v9'" in unknown.output


def _nodes_of(tree: dict) -> set[tuple]:
    return {(tree["kind"], tree["name"], tree["version"])} | {n for c in tree["children"] for n in _nodes_of(c)}
