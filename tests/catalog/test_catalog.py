"""The catalog of a filled workspace (tests/report/workspace.py): every dataset, feature view, feature service and
model version is listed with owner (its own or the project's), description, schema, freshness and quality score
read from the workspace; the CLI prints and stores it as JSON and HTML; the page loads in headless Chromium,
self-contained; the pipeline step publishes it as an HTML artifact under kfp.local."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from kfp import local
from typer.testing import CliRunner

from kfloop import lake, layout
from kfloop.catalog import collect, make_catalog
from kfloop.catalog.render import SECTIONS
from kfloop.cli import app
from kfloop.config import Config, config_to_json
from kfloop.pipelines.catalog import build_catalog_pipeline
from kfloop.pipelines.local import project_python_on_path
from kfloop.storage import LocalStorage
from tests.browser import CHROMIUM, Browser
from tests.report.workspace import filled_workspace

FIELDS = {"name", "kind", "owner", "owner_inherited", "description", "schema", "freshness", "quality"}
PROJECT_OWNER = "data-platform@example.com"
VIEW_OWNER = "risk-team@example.com"
HOSTILE = "Scores <script>alert(1)</script> card payments"


@dataclass
class Filled:
    root: Path
    config: Config
    config_path: Path
    storage: LocalStorage
    record: dict


def _describe(data: dict) -> None:
    data["owner"] = PROJECT_OWNER
    data["source"]["description"] = "Card transactions, one row per payment."
    data["features"]["views"][1] |= {"owner": VIEW_OWNER, "description": "Fraud rate and volume per merchant."}
    data["training"]["description"] = HOSTILE


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    ws = filled_workspace(tmp_path_factory.mktemp("catalog"), _describe)
    return Filled(ws.root, ws.config, ws.config_path, ws.storage, collect(ws.config, ws.storage))


def _entries(record: dict) -> list[dict]:
    return [e for key, _ in SECTIONS for e in record[key]]


def test_every_object_of_the_workspace_is_listed_with_the_common_fields(filled: Filled) -> None:
    r = filled.record
    assert [(d["name"], d["kind"]) for d in r["datasets"]] == [
        ("transactions", "raw"),
        ("transactions_clean", "clean"),
        ("transactions_contract", "quarantine"),  # the second validate run quarantined rows
    ]
    assert [v["name"] for v in r["feature_views"]] == ["customer_activity", "merchant_risk"]
    assert [s["name"] for s in r["feature_services"]] == [filled.config.features.service]
    (model,) = r["models"]
    assert model["name"] == "fraud-detector" and model["champion"] == "v3"
    assert [(v["version"], v["stage"]) for v in model["versions"]] == [
        ("v1", "archived"),
        ("v2", "rejected"),
        ("v3", "champion"),
    ]
    for entry in _entries(r):
        assert set(entry) >= FIELDS, entry["name"]
        assert entry["schema"], entry["name"]


def test_values_come_from_the_workspace(filled: Filled) -> None:
    raw, clean, quarantine = filled.record["datasets"]
    manifest = lake.read_manifest(filled.storage, "transactions")
    assert raw["rows"] == manifest.rows and raw["files"] == len(manifest.files)
    assert raw["freshness"]["newest_event"] == manifest.watermark
    assert raw["schema"] == manifest.schema
    report = json.loads(filled.storage.read_text(layout.latest_key(layout.report_prefix("transactions"))))
    assert raw["quality"]["score"] == clean["quality"]["score"] == report["quality_score"]
    assert quarantine["rows"] == 60 and quarantine["quality"] is None and "_reasons" in quarantine["schema"]
    views = {v["name"]: v for v in filled.record["feature_views"]}
    assert views["customer_activity"]["freshness"]["stale"] is False  # 5 min behind, 15 min SLA
    assert views["merchant_risk"]["freshness"]["stale"] is True  # hours behind
    assert set(views["merchant_risk"]["schema"]) == {"amount_count_30d", "amount_sum_30d", "is_fraud_mean_30d"}
    (model,) = filled.record["models"]
    assert model["quality"] == {"metric": "pr_auc", "split": "test", "score": 0.68}  # the gate's test metric
    assert [v["training_set"] for v in model["versions"]] == ["ts-v1", "ts-v2", "ts-v3"]


def test_owners_default_to_the_projects(filled: Filled) -> None:
    owners = {(e["kind"], e["name"]): (e["owner"], e["owner_inherited"]) for e in _entries(filled.record)}
    assert owners.pop(("aggregates", "merchant_risk")) == (VIEW_OWNER, False)
    assert set(owners.values()) == {(PROJECT_OWNER, True)}
    raw = filled.record["datasets"][0]
    assert raw["description"] == "Card transactions, one row per payment."


def test_the_cli_prints_and_stores_json_and_html(filled: Filled, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["catalog", "-c", str(filled.config_path), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    stored = json.loads(filled.storage.read_text(layout.catalog_key("json")))
    assert printed == stored == json.loads((out / "catalog.json").read_text())
    for key in ("datasets", "models"):  # (a view's online age grows with the clock)
        assert printed[key] == filled.record[key]
    html = filled.storage.read_text(layout.catalog_key("html"))
    assert (out / "catalog.html").read_text() == html
    table = CliRunner().invoke(app, ["catalog", "-c", str(filled.config_path)])
    assert table.exit_code == 0 and "(champion)" in table.output and "reports/catalog.html" in table.output


def test_the_page_escapes_workspace_and_config_values(filled: Filled) -> None:
    html = make_catalog(filled.config, filled.storage, store=False).html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for entry in _entries(filled.record):
        assert f'data-name="{entry["name"]}"' in html


PROBE = """
(() => ({
  ready: document.readyState,
  fetched: performance.getEntriesByType('resource').map(e => e.name),
  sections: [...document.querySelectorAll('section[data-section]')].map(s => [s.dataset.section,
    s.querySelectorAll('tbody tr[data-name]').length]),
  versions: document.querySelectorAll('tr[data-version]').length,
}))()
"""


def test_the_page_loads_in_chromium_self_contained(filled: Filled, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium: run `make system-test`"
    page = tmp_path / "catalog.html"
    page.write_text(make_catalog(filled.config, filled.storage, store=False).html)
    browser = Browser(tmp_path / "profile")
    try:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=page.as_uri())
        deadline = time.monotonic() + 30
        while not (isinstance(found := browser.evaluate(PROBE), dict) and found["ready"] == "complete"):
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
    finally:
        browser.close()
    assert found["fetched"] == []
    assert found["sections"] == [["summary", 0], ["datasets", 3], ["feature_views", 2], ["feature_services", 1],
                                 ["models", 1]]  # fmt: skip
    assert found["versions"] == 3


def test_the_pipeline_step_publishes_the_catalog_as_an_html_artifact(
    filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project_python_on_path()
    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    build_catalog_pipeline(filled.config, retries=0)(config_json=config_to_json(filled.config))
    (step,) = [p for p in root.glob("*/catalog-component") if p.is_dir()]
    html = (step / "catalog_html").read_text()
    assert all(f'data-section="{name}"' in html for name, _ in SECTIONS)
    assert filled.storage.read_text(layout.catalog_key("html")) == html  # stored in the workspace as well
    outputs = json.loads((step / "executor_output.json").read_text())["artifacts"]
    metrics = outputs["metrics"]["artifacts"][0]["metadata"]
    assert metrics["datasets"] == 3 and metrics["model_versions"] == 3 and metrics["stale_feature_views"] == 1
    assert metrics["without_owner"] == 0
    assert outputs["catalog_html"]["artifacts"][0]["metadata"]["catalog"].endswith("reports/catalog.html")
