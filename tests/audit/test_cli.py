"""``kfloop audit verify|show``: exit codes and messages, and the filters of show."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfloop import layout
from kfloop.audit import read, verify
from kfloop.cli import app
from kfloop.cli.audit_cmd import BROKEN, parse_since
from kfloop.config import config_to_json, parse_config

runner = CliRunner()


def _flat(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines (a hash) at the terminal width."""
    return "".join(text.split())


def _copy(audited, dest: Path) -> Path:
    """A config on a copy of the filled workspace's trail (tests that tamper leave the shared one alone)."""
    shutil.copytree(audited.root / "ws" / "audit", dest / "ws" / "audit")
    data = audited.config.model_dump(mode="json")
    data["storage"] = {"type": "local", "root": str(dest / "ws")}
    path = dest / "kfloop.json"
    path.write_text(config_to_json(parse_config(data, "copy")))
    return path


def test_verify_an_intact_trail_prints_the_count_and_the_head(audited) -> None:
    verdict = verify(audited.storage)
    result = runner.invoke(app, ["audit", "verify", "-c", str(audited.config_path)])
    assert result.exit_code == 0, result.output
    assert _flat(f"{verdict.records} record(s) checked; head {verdict.head}") in _flat(result.stdout)
    again = runner.invoke(app, ["audit", "verify", "-c", str(audited.config_path), "--expect-head", verdict.head])
    assert again.exit_code == 0, again.output


def test_verify_a_tampered_trail_names_the_first_bad_record(audited, tmp_path: Path) -> None:
    config = _copy(audited, tmp_path)
    key = tmp_path / "ws" / layout.audit_log_key(4)
    record = json.loads(key.read_text())
    key.write_text(json.dumps({**record, "details": {**record["details"], "reason": "nobody asked"}}))
    result = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert result.exit_code == BROKEN == 4
    assert _flat("audit trail broken at record 4: record 4 was changed") in _flat(result.stderr)
    assert _flat("3 record(s) before it check out") in _flat(result.stderr)


def test_verify_against_another_head_fails(audited) -> None:
    result = runner.invoke(app, ["audit", "verify", "-c", str(audited.config_path), "--expect-head", "f" * 64])
    assert result.exit_code == BROKEN
    assert _flat(f"not the expected {'f' * 64}") in _flat(result.stderr)


def _shown(audited, *args: str) -> list[dict]:
    result = runner.invoke(app, ["audit", "show", "-c", str(audited.config_path), "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_show_filters_by_model_action_and_time(audited) -> None:
    everything = read(audited.storage)
    assert _shown(audited) == everything
    model = audited.config.training.model_name
    assert _shown(audited, "--model", model) == [r for r in everything if r["subject"].get("model") == model]
    promotions = _shown(audited, "--action", "model.promote")
    assert promotions and {r["action"] for r in promotions} == {"model.promote"}
    both = _shown(audited, "--action", "model", "--action", "retrain.decision")
    assert [r["seq"] for r in both] == [
        r["seq"] for r in everything if r["action"].startswith("model.") or r["action"] == "retrain.decision"
    ]
    assert _shown(audited, "--since", "1d") == everything  # all written by the fixture just now
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert _shown(audited, "--since", tomorrow) == []
    assert _shown(audited, "--model", "no-such-model") == []


def test_show_prints_a_table(audited) -> None:
    result = runner.invoke(app, ["audit", "show", "-c", str(audited.config_path), "--action", "model.reject"])
    assert result.exit_code == 0, result.output
    assert "audit trail: 1 record(s)" in result.stdout and "model.reject" in result.stdout


def test_show_refuses_a_since_that_is_neither_a_duration_nor_a_date(audited) -> None:
    result = runner.invoke(app, ["audit", "show", "-c", str(audited.config_path), "--since", "last week"])
    assert result.exit_code == 2
    assert "neither a duration" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("90m", datetime(2026, 3, 8, 10, 30, tzinfo=UTC)),
        ("2026-03-05", datetime(2026, 3, 5, tzinfo=UTC)),
        ("2026-03-05T06:00:00+02:00", datetime(2026, 3, 5, 4, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_or_an_iso_time(text: str, expected: datetime) -> None:
    assert parse_since(text, now=datetime(2026, 3, 8, 12, tzinfo=UTC)) == expected
