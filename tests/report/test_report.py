"""`kfloop report`: the periodic report renders every section from a filled workspace (what each stage recorded, read
back: runs, scores, views, versions, episodes, decisions, SLOs), is one self-contained page, is stored with its data
and a latest pointer; an empty workspace gives a report that says so, an unreadable record is named and left out,
and a missing Chromium is one line naming the package."""

from __future__ import annotations

import json
import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop import layout
from kfloop.cli import app
from kfloop.config import config_to_json
from kfloop.report.publish import make_report
from kfloop.report.render import SECTIONS
from kfloop.storage import LocalStorage, S3Storage
from tests.report.conftest import Filled
from tests.report.workspace import CHECKS, VERSIONS, VIEWS, report_config


class _Page(HTMLParser):
    """Every element's tag and attributes, and the text of each section."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, str] = {}
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "section":
            self._section = attributes["data-section"]
            self.sections[self._section or ""] = ""

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section] += data

    def with_attr(self, name: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.elements if name in a]


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_every_section_renders_from_a_filled_workspace(filled: Filled) -> None:
    record, page = filled.report.record, _page(filled.report.html)
    assert list(page.sections) == [name for name, _ in SECTIONS]
    # data: two ingest runs, two validate runs, the second quarantining the rows the contract refused
    (data,) = record["data"]["datasets"]
    assert [r["rows_read"] for r in data["ingest_runs"]] == [1200, 1200]
    first, second = data["quality"]
    assert first["score"] == 100.0 and second["score"] < 100.0 and second["rows_quarantined"] > 0
    assert {a["data-run"] for a in page.with_attr("data-run")} == {first["run_id"], second["run_id"]}
    # features: both views' status now, the first one's lag trend from its samples (p99 over the SLA)
    views = {v["view"]: v for v in record["features"]["views"]}
    assert set(views) == set(VIEWS) and views[VIEWS[1]]["stale"] and not views[VIEWS[0]]["stale"]
    assert views[VIEWS[0]]["minutes"] == 288 and views[VIEWS[0]]["minutes_over_sla"] > 0
    assert views[VIEWS[0]]["trend"] and not views[VIEWS[1]]["trend"]
    # models: every version with its stage, metrics and gate decision
    versions = {v["version"]: v for v in record["models"]["versions"]}
    assert {v: (versions[v]["stage"], versions[v]["promoted"]) for v in versions} == {
        "v1": ("archived", True),
        "v2": ("rejected", False),
        "v3": ("champion", True),
    }
    assert [versions[v]["test"]["pr_auc"] for v, *_ in VERSIONS] == [t for _, _, t, _ in VERSIONS]
    assert {a["data-version"] for a in page.with_attr("data-version")} == {"v1", "v2", "v3"}
    # drift: the checks, one episode of two drift verdicts, one retrain started and the second drift refused
    assert [c["verdict"] for c in record["drift"]["checks"]] == [c[2] for c in CHECKS]
    (episode,) = record["drift"]["episodes"]
    assert episode["checks"] == 2 and episode["max_share"] == 0.75 and episode["ended"] is not None
    assert [d["decision"] for d in record["drift"]["decisions"]] == ["retrain", "no"]
    assert [a["data-decision"] for a in page.with_attr("data-decision")] == ["no", "retrain"]  # newest first
    # SLOs: every objective in the table, with a budget bar each
    names = [o["name"] for o in record["slo"]["objectives"]]
    assert record["slo"]["available"] and names
    assert [a["data-slo"] for a in page.with_attr("data-slo")] == names
    pipeline = next(o for o in record["slo"]["objectives"] if o["name"] == "pipeline_success")
    assert (pipeline["good"], pipeline["total"]) == (2, 3)
    # the plots, inline
    plots = {a["data-plot"] for a in page.with_attr("data-plot")}
    assert {"ingest-transactions", "quality-transactions", f"freshness-{VIEWS[0]}", "model-metric"} <= plots
    assert {"drift-verdicts", "drift-share"} <= plots and {f"budget-{n}" for n in names} <= plots
    s = record["summary"]
    assert (s["ingest_runs"], s["champion"], s["drift_episodes"], s["retrains_started"]) == (2, "v3", 1, 1)
    assert not s["empty"] and not page.with_attr("data-empty")
    assert all(not record[p]["problems"] for p in ("data", "features", "models", "drift"))


def test_the_page_is_self_contained(filled: Filled) -> None:
    """No script, no stylesheet or image link, no URL fetched: the page opens offline and in an artifact viewer."""
    page = _page(filled.report.html)
    assert not [t for t, _ in page.elements if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not page.with_attr("src") and not page.with_attr("href")
    assert {a["xmlns"] for a in page.with_attr("xmlns")} == {"http://www.w3.org/2000/svg"}
    assert "url(" not in filled.report.html and "@import" not in filled.report.html


def test_the_report_is_stored_with_its_data_and_a_latest_pointer(filled: Filled) -> None:
    storage = filled.storage
    result = make_report(filled.config, storage, send=False)  # the newest (other tests add reports too)
    model, report_id = result.record["model"], result.record["report_id"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", report_id)
    assert result.keys == {
        "html": f"reports/{model}/periodic/{report_id}.html",
        "json": f"reports/{model}/periodic/{report_id}.json",
    }
    assert storage.read_text(result.keys["html"]) == result.html
    stored = json.loads(storage.read_text(result.keys["json"]))
    assert stored == json.loads(json.dumps(result.record, default=str))
    assert stored["files"] == result.keys
    latest = layout.latest_key(layout.periodic_report_prefix(model))
    assert json.loads(storage.read_text(latest))["report_id"] == report_id


def test_an_empty_workspace_gives_a_report_that_says_so(tmp_path: Path) -> None:
    config = report_config(tmp_path / "ws", webhook=False)
    path = tmp_path / "kfloop.json"
    path.write_text(config_to_json(config))
    result = CliRunner().invoke(app, ["report", "-c", str(path), "--no-send", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "nothing was recorded for model fraud-detector in the last 7d" in result.output
    (html_file,) = (tmp_path / "out").glob("*.html")
    page = _page(html_file.read_text())
    assert list(page.sections) == [name for name, _ in SECTIONS]
    assert page.with_attr("data-empty")
    assert "No ingest run and no validate run in this period." in page.sections["data"]
    assert "has no registered version" in page.sections["models"]
    assert "No drift check and no retrain decision in this period." in page.sections["drift"]
    assert (tmp_path / "out" / html_file.name.replace(".html", ".json")).is_file()
    assert LocalStorage(tmp_path / "ws").exists(layout.latest_key(layout.periodic_report_prefix("fraud-detector")))


def test_an_unreadable_record_is_named_and_left_out(filled: Filled, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    for key in filled.storage.list(layout.drift_checks_prefix("fraud-detector") + "/"):
        storage.write_bytes(key, filled.storage.read_bytes(key))
    broken = layout.drift_check_key("fraud-detector", filled.report.record["drift"]["checks"][-1]["check_id"], "json")
    storage.write_text(broken, "{not json")
    result = make_report(report_config(tmp_path / "ws", webhook=False), storage, send=False)
    drift = result.record["drift"]
    assert len(drift["checks"]) == len(CHECKS) - 1
    (problem,) = drift["problems"]
    assert storage.uri(broken) in problem and "left out" in problem
    assert storage.uri(broken) in _page(result.html).sections["drift"]


def test_a_pdf_without_chromium_is_one_clear_line(
    filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing named chromium here
    before = set(filled.storage.list(layout.periodic_report_prefix("fraud-detector") + "/"))
    result = CliRunner().invoke(app, ["report", "-c", str(filled.config_path), "--pdf", "--no-send"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "headless Chromium" in lines[0] and "apt-get install chromium" in lines[0]
    assert set(filled.storage.list(layout.periodic_report_prefix("fraud-detector") + "/")) == before  # nothing half


def test_bad_report_settings_are_config_errors(filled: Filled) -> None:
    from kfloop.config import parse_config
    from kfloop.errors import ConfigError

    data = filled.config.model_dump(mode="json")
    for section, values, match in (
        ("report", {"period": "a week"}, r"report\.period: .*not a duration"),
        ("report", {"period": "0d"}, r"report\.period: .*longer than zero"),
        ("report", {"versions": 0}, r"report\.versions"),
        ("schedules", {"report": {"cron": "weekly"}}, r"schedules\.report\.cron: .*not a cron expression"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_config({**data, section: {**data[section], **values}}, "<test>")


@pytest.mark.s3
def test_the_report_of_a_workspace_in_s3(filled: Filled, s3_storage: S3Storage) -> None:
    """The same workspace copied into S3 (moto_server) gives the same report, stored there under s3:// URIs."""
    for path in sorted(p for p in filled.storage.root.rglob("*") if p.is_file()):
        key = path.relative_to(filled.storage.root).as_posix()
        if not key.startswith(layout.REPORTS + "/fraud-detector/"):  # the reports made so far stay out
            s3_storage.write_bytes(key, path.read_bytes())
    result = make_report(filled.config, s3_storage, send=False, now=_at(filled.report.record["created"]))
    ours, theirs = result.record, filled.report.record
    for part in ("data", "features", "models", "drift"):
        assert ours[part] == theirs[part], part
    assert result.uris["html"] == f"s3://{s3_storage.bucket}/ws/{result.keys['html']}"
    assert s3_storage.read_text(result.keys["html"]) == result.html
    assert (
        json.loads(s3_storage.read_text(layout.latest_key(layout.periodic_report_prefix("fraud-detector"))))[
            "report_id"
        ]
        == ours["report_id"]
    )


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)
