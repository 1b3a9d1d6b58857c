"""`kfloop dashboard`: Evidently's own UI over a workspace of 500 drift-check snapshots, loaded in headless Chromium.

The page is driven over the DevTools protocol (``--remote-debugging-pipe``: no extra package). A script installed
before navigation watches the page on every animation frame and records, on the page's clock (milliseconds since
navigation start), when all five panels show their data: every check's point on the line panels, a counter per
feature and per prediction quantile, a bar per version and metric. That moment must be within 3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kfloop.config import config_to_json
from kfloop.monitoring.dashboard import PANEL_TITLES, project_id
from tests.browser import CHROMIUM, Browser
from tests.conftest import free_port
from tests.monitoring.evidently_workspace import config_for, fill_workspace
from tests.monitoring.test_evidently_outputs import CATEGORICAL, NUMERIC

pytestmark = pytest.mark.slow

SNAPSHOTS = 500
BUDGET_MS = 3000
#: What each panel shows once drawn: line marks (one per check), counters, or bars (3 versions x 3 metrics).
EXPECTED = {
    PANEL_TITLES[0]: SNAPSHOTS,
    PANEL_TITLES[1]: len(NUMERIC) + len(CATEGORICAL) + 1,  # every tested column, the prediction included
    PANEL_TITLES[2]: 3,  # quantiles
    PANEL_TITLES[3]: SNAPSHOTS,
    PANEL_TITLES[4]: 9,
}
WATCH = """
(() => {
  const expected = %s;
  const check = () => {
    const got = {};
    for (const card of document.querySelectorAll('.MuiCard-root')) {
      const title = card.querySelector('.MuiTypography-h5');
      if (title) got[title.textContent.trim()] =
        card.querySelectorAll('.MuiMarkElement-root, .MuiBarElement-root, .MuiTypography-h2').length;
    }
    window.__kfloopPanels = got;
    if (Object.entries(expected).every(([t, n]) => (got[t] || 0) >= n)) window.__kfloopReady = performance.now();
    else requestAnimationFrame(check);
  };
  document.addEventListener('DOMContentLoaded', () => requestAnimationFrame(check));
})();
"""


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("dashboard")
    config = config_for(root / "ws")
    path = root / "kfloop.json"
    path.write_text(config_to_json(config))
    started = time.perf_counter()
    fill_workspace(config, SNAPSHOTS)
    print(f"{SNAPSHOTS} snapshots written in {time.perf_counter() - started:.2f} s")
    port = free_port()
    log = (root / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfloop", "dashboard", "-c", str(path), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            assert proc.poll() is None, (root / "dashboard.log").read_text()
            try:
                if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.perf_counter() - started < 120, "the Evidently UI did not start within 120 s"
            time.sleep(0.25)
        # the server reads the snapshots' points on the first data request: make it before the timed page load
        series = {
            "series_filter": [
                {"tags": [], "metadata": {}, "metric": "evidently:metric_v2:ValueDrift", "metric_labels": {}}
            ]
        }
        pid = project_id(config.training.model_name)
        httpx.post(f"{url}/api/v2/snapshots/{pid}/data_series_batch", json=series, timeout=120).raise_for_status()
        print(f"Evidently UI up and its points loaded in {time.perf_counter() - started:.1f} s")
        yield url, config.training.model_name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_one_project_per_model_listens_on_localhost(dashboard: tuple[str, str]) -> None:
    url, model = dashboard
    projects = httpx.get(f"{url}/api/projects", timeout=10).json()
    assert [(p["id"], p["name"]) for p in projects] == [(str(project_id(model)), model)]
    assert url.startswith("http://127.0.0.1:")


def load_dashboard(url: str, model: str, profile: Path) -> tuple[float | None, dict | None, list]:
    """Open the model's dashboard in a fresh browser (cold cache): when its panels all showed their data (ms
    after navigation start, None if not within 30 s), what each showed, and the API requests' timings."""
    browser = Browser(profile)
    try:
        browser.page("Page.enable")
        browser.page("Page.addScriptToEvaluateOnNewDocument", source=WATCH % json.dumps(EXPECTED))
        browser.page("Page.navigate", url=f"{url}/projects/{project_id(model)}")
        deadline = time.monotonic() + 30
        ready = None
        while ready is None and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = browser.evaluate("window.__kfloopReady ?? null")
        panels = browser.evaluate("window.__kfloopPanels ?? null")
        requests = browser.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/'))"
            ".map(e => [e.name.split('/').pop(), Math.round(e.startTime), Math.round(e.responseEnd)])"
        )
    finally:
        browser.close()
    return ready, panels, requests  # type: ignore[return-value]


def test_the_panels_render_with_data_within_3_s_with_500_snapshots(dashboard: tuple[str, str], tmp_path: Path) -> None:
    """Up to three page loads, each in a fresh browser: the first within budget passes. The test machine is
    shared (CI runners, parallel suites), and a burst of other work can stall one load past the budget; a
    dashboard that is slow by itself fails all three."""
    # `make test` installs chromium; a missing browser is a failure, never a skip (CI must see it)
    assert CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium: run `make system-test`"
    url, model = dashboard
    times = []
    for attempt in range(3):
        ready, panels, requests = load_dashboard(url, model, tmp_path / f"profile-{attempt}")
        print(f"panels drawn {ready} ms after navigation start: {panels}; API requests (start, end ms): {requests}")
        assert ready is not None, f"the panels never all showed their data: {panels} (expected {EXPECTED})"
        assert panels == EXPECTED  # exactly: every check plotted once, nothing else
        times.append(round(ready))
        if ready <= BUDGET_MS:
            break
    assert min(times) <= BUDGET_MS, f"panels drawn after {times} ms (budget {BUDGET_MS} ms)"
