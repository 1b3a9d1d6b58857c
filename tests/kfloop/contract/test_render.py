"""HTML and Markdown rendering of a QualityReport, including a real headless-Chromium render."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kfloop.contract.render import render_html, render_markdown
from kfloop.contract.report import CheckResult, QualityReport, SchemaChange
from tests.browser import CHROMIUM, CHROMIUM_FLAGS


def _check(check: str, kind: str, *, failed: int = 0, total: int = 1000, **kw: object) -> CheckResult:
    level = kw.pop("level", "row")
    return CheckResult(
        check=check,
        kind=kind,
        level=level,  # type: ignore[arg-type]
        severity=kw.pop("severity", "error"),  # type: ignore[arg-type]
        passed=failed == 0,
        failed=failed,
        total=total,
        message=str(kw.pop("message", f"{check} ok")),
        column=kw.pop("column", None),  # type: ignore[arg-type]
        examples=kw.pop("examples", []),  # type: ignore[arg-type]
    )


def passing_report() -> QualityReport:
    return QualityReport(
        dataset="transactions",
        run_id="run-ok-1",
        created="2025-01-01T00:00:00Z",
        rows_in=1000,
        rows_clean=1000,
        rows_quarantined=0,
        rows_dropped_duplicates=0,
        checks=[
            _check("amount.min", "min", column="amount"),
            _check("user_id.nullable", "nullable", column="user_id"),
            _check("table.min_rows", "min_rows", level="table", total=1),
        ],
    )


def failing_report() -> QualityReport:
    return QualityReport(
        dataset="transactions",
        run_id="run-bad-7",
        created="2025-01-02T00:00:00Z",
        rows_in=1000,
        rows_clean=940,
        rows_quarantined=25,
        rows_dropped_duplicates=12,
        checks=[
            _check(
                "amount.min",
                "min",
                column="amount",
                failed=37,
                message="amount >= 0 expected; found negative values",
                examples=[{"row": 3, "amount": -5.0}, {"row": 9, "amount": -0.01}],
            ),
            _check(
                "country.allowed",
                "allowed",
                column="country",
                severity="warn",
                failed=4,
                message="country in {DE, FR} | got others",
                examples=[{"row": 11, "country": "<script>alert(1)</script>"}, {"row": 12, "country": "a|b"}],
            ),
            _check(
                "email.regex",
                "regex",
                column="email",
                severity="quarantine",
                failed=25,
                message="email must match pattern",
                examples=[{"row": 2, "email": "not-an-email"}],
            ),
            _check("user_id.nullable", "nullable", column="user_id"),
            _check("table.completeness", "completeness", level="table", total=1),
        ],
        schema_changes=[
            SchemaChange("missing", "merchant_id", "column in contract but not in data", breaking=True),
            SchemaChange("new", "channel", "column not in contract", breaking=False),
        ],
    )


FAILING_IDS = ["amount.min", "email.regex", "country.allowed"]  # error, quarantine, warn


def test_passing_report_html_and_markdown() -> None:
    report = passing_report()
    html = render_html(report)
    assert report.quality_score == 100.0
    assert '<div class="score" title="quality score">100<small>%</small></div>' in html
    assert "PASSED" in html and "FAILED" not in html
    assert "data-failing-check" not in html and "No failing checks." in html
    assert "Schema changes" not in html
    assert re.findall(r'<tr data-check="[^"]+" data-passed="(\w+)"', html) == ["true"] * 3
    assert "mean, over every check that ran, of its pass rate" in html
    assert "<script" not in html.lower()

    md = render_markdown(report)
    assert "Quality score: 100%" in md and "PASSED" in md
    assert "Failing checks" not in md and "All 3 checks passed." in md


def test_failing_report_lists_failing_checks() -> None:
    report = failing_report()
    html = render_html(report)
    assert "FAILED" in html and "PASSED" not in html
    assert f"{report.quality_score:g}<small>%</small>" in html
    for needle in ("1,000", "940", "25", "12", "dropped duplicates"):
        assert needle in html
    cards = re.findall(r'data-failing-check="([^"]+)"', html)
    assert cards == FAILING_IDS  # error first, then quarantine, then warn
    assert "<b>37</b> of 1,000 failing (3.7%)" in html
    assert "<b>25</b> of 1,000 failing (2.5%)" in html
    assert "<td>-0.01</td>" in html and "<td>not-an-email</td>" in html
    assert '<span class="badge error">error</span>' in html and '<span class="badge warn">warn</span>' in html
    for cid in FAILING_IDS:
        assert f'data-check="{cid}" data-passed="false"' in html
    assert 'data-check="user_id.nullable" data-passed="true"' in html
    # Failing section comes before the schema changes, which come before the full table.
    assert html.index("Failing checks") < html.index("Schema changes") < html.index("All checks")
    assert "merchant_id" in html and "breaking</span>" in html


def test_html_escapes_user_values() -> None:
    report = failing_report()
    report.dataset = 'tx<img src=x onerror="alert(1)">'
    html = render_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_markdown_failing_table_escapes_pipes() -> None:
    md = render_markdown(failing_report())
    assert "FAILED" in md and "dropped duplicates: 12" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", r).group(1) for r in rows[:3]] == FAILING_IDS  # type: ignore[union-attr]
    assert "| `amount.min` | error | 37 | 3.7% | amount >= 0 expected; found negative values |" in md
    assert r"country in {DE, FR} \| got others" in md
    for row in rows[:3]:  # every failing row has exactly 6 unescaped pipes (5 cells)
        assert len(re.findall(r"(?<!\\)\|", row)) == 6
    assert "## Schema changes" in md and "| missing | `merchant_id` |" in md and "**yes**" in md


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    # `make test` installs chromium; a missing browser is a failure, never a skip (CI must see it)
    assert CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium: run `make system-test`"
    report = failing_report()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    png = tmp_path / "report.png"
    base = [str(CHROMIUM), *CHROMIUM_FLAGS]

    dom = subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for cid in FAILING_IDS:
        assert f'data-check="{cid}"' in dom
        assert f'data-failing-check="{cid}"' in dom
    assert f"{report.quality_score:g}" in dom and "FAILED" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # still text after parsing, not an element

    subprocess.run(
        [
            *base,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert png.exists() and png.stat().st_size > 10_000
