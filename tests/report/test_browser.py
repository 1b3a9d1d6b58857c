"""The report in headless Chromium: the page loads within 3 s with every section and plot drawn, fetching nothing;
and ``--pdf`` prints it to a PDF stored beside the page.

The page is driven over the DevTools protocol as the Evidently dashboard's test does
(:class:`tests.monitoring.test_evidently_dashboard.Browser`); the load time is the page's own clock (the navigation
entry's ``loadEventEnd``, milliseconds from navigation start)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.report.render import SECTIONS
from tests.browser import CHROMIUM, Browser
from tests.report.conftest import Filled

pytestmark = pytest.mark.slow

BUDGET_MS = 3000
#: What the page holds once laid out: each section's heading, the plots that have a size, fetches made.
PROBE = """
(() => {
  const sections = [...document.querySelectorAll('section[data-section]')].map(s => ({
    name: s.dataset.section,
    heading: s.querySelector('h2')?.textContent ?? null,
    plots: [...s.querySelectorAll('svg.plot')].filter(p => p.getBoundingClientRect().width > 0).length,
    rows: s.querySelectorAll('tbody tr').length,
  }));
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    ready: document.readyState,
    load: nav ? nav.loadEventEnd : null,
    fetched: performance.getEntriesByType('resource').map(e => e.name),
    sections,
  };
})()
"""


def _load(url: str, profile: Path) -> dict:
    """Open ``url`` in a fresh browser and read the page once it has loaded (within 30 s)."""
    browser = Browser(profile)
    try:
        browser.page("Page.enable")
        browser.page("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while True:
            found = browser.evaluate(PROBE)
            if isinstance(found, dict) and found["ready"] == "complete" and found["load"]:
                return found
            assert time.monotonic() < deadline, f"the page did not load within 30 s: {found}"
            time.sleep(0.05)
    finally:
        browser.close()


def test_the_report_loads_in_chromium_within_3_s_with_every_section(filled: Filled, tmp_path: Path) -> None:
    """Up to three loads, each in a fresh browser: the first within budget passes (a shared machine can stall one
    load; a slow page fails all three)."""
    # `make test` installs chromium; a missing browser is a failure, never a skip (CI must see it)
    assert CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium: run `make system-test`"
    page = filled.storage.local_path(filled.report.keys["html"])
    assert page is not None
    times = []
    for attempt in range(3):
        found = _load(page.as_uri(), tmp_path / f"profile-{attempt}")
        print(json.dumps({k: v for k, v in found.items() if k != "sections"}), found["sections"])
        assert found["fetched"] == []  # self-contained: nothing requested beyond the page itself
        sections = {s["name"]: s for s in found["sections"]}
        assert [s["name"] for s in found["sections"]] == [name for name, _ in SECTIONS]
        assert {n: s["heading"] for n, s in sections.items()} == dict(SECTIONS)
        for name in ("data", "features", "models", "drift", "slo"):
            assert sections[name]["plots"] > 0 and sections[name]["rows"] > 0, sections[name]
        times.append(round(found["load"]))
        if found["load"] <= BUDGET_MS:
            break
    assert min(times) <= BUDGET_MS, f"the report loaded after {times} ms (budget {BUDGET_MS} ms)"


def test_pdf_is_printed_and_stored_beside_the_page(filled: Filled, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium: run `make system-test`"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", "-c", str(filled.config_path), "--pdf", "--no-send", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(next(out.glob("*.json")).read_text())
    key = record["files"]["pdf"]
    assert key == f"reports/fraud-detector/periodic/{record['report_id']}.pdf"
    stored = filled.storage.read_bytes(key)
    assert stored.startswith(b"%PDF-") and stored.rstrip().endswith(b"%%EOF")
    assert stored.count(b"/Type /Page") - stored.count(b"/Type /Pages") >= 2  # six sections do not fit one A4 page
    assert (out / f"{record['report_id']}.pdf").read_bytes() == stored
    assert f"pdf   {filled.storage.uri(key)}" in result.output
