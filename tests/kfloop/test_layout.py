"""The workspace layout is named in one module, and stages meet there instead of importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kfloop import layout

ROOT = Path(__file__).resolve().parents[2]
#: Folders whose modules make up the installed package (see package-dir in pyproject.toml).
PACKAGE_DIRS = ("kfloop", "components", "pipelines", "feature_repo", "serving", "monitoring")
TOP_LEVEL = (
    layout.LAKE,
    layout.QUARANTINE,
    layout.REPORTS,
    layout.FEATURES,
    layout.FEAST_DIR,
    layout.TRAINING_SETS,
    layout.REGISTRY,
    layout.MONITORING,
    layout.AUDIT,
    layout.EVIDENTLY_UI,
    layout.ADHOC,
)


def _modules() -> list[Path]:
    return [p for d in PACKAGE_DIRS for p in sorted((ROOT / d).rglob("*.py")) if p != ROOT / "kfloop" / "layout.py"]


def _leading_text(node: ast.AST) -> str | None:
    """The literal text a string expression starts with (a plain string, or an f-string's first part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _leading_text(node.values[0])
    return None


def test_no_module_but_layout_spells_a_workspace_location() -> None:
    """A key such as ``registry/<model>/...`` built anywhere else would drift from the layout one day."""
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            text = _leading_text(node)
            if text is None or id(node) in docstrings:
                continue
            if any(text.startswith(f"{top}/") for top in TOP_LEVEL):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert not offenders, "build these keys with kfloop.layout:\n" + "\n".join(offenders)


def test_no_stage_imports_another_stage() -> None:
    """Stages share locations and helpers through kfloop.*, so each runs (and is tested) on its own."""
    offenders = []
    for path in sorted((ROOT / "components").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith(("kfloop.components.", "components.")) for n in names):
                offenders.append(f"components/{path.name}:{node.lineno}")
    assert not offenders, "a stage imports another stage: " + ", ".join(offenders)


def test_a_data_file_names_the_run_that_wrote_it() -> None:
    """Cleanup decides whose file a data file is from its name alone."""
    key = layout.part_key("transactions", "2026-01-02", "20260102T000000Z-abc123", 7)
    assert key == "lake/transactions/data/event_date=2026-01-02/part-20260102T000000Z-abc123-00007.parquet"
    assert layout.part_run_id(key) == "20260102T000000Z-abc123"


@pytest.mark.parametrize(
    "name",
    [
        "_manifest.json",
        "part-.parquet",
        "part-run.parquet",
        "other-run-00001.parquet",
        "part-run-x1.parquet",
        "part-run-00001.parquet.tmp",
    ],
)
def test_foreign_file_names_belong_to_no_run(name: str) -> None:
    assert layout.part_run_id(f"lake/transactions/data/event_date=2026-01-02/{name}") is None


def test_each_kind_of_record_has_its_own_place() -> None:
    """Two kinds of record never share a key, so no writer overwrites another's output."""
    keys = [
        layout.manifest_key("tx"),
        layout.lake_lock_key("tx"),
        layout.active_key("tx", "r1"),
        layout.run_record_key("tx", "r1"),
        layout.manifest_key(layout.clean_dataset("tx")),
        layout.quarantine_key("tx", "r1"),
        layout.contract_quarantine_key("tx", "r1"),
        layout.report_key("tx", "r1", "json"),
        layout.latest_key(layout.report_prefix("tx")),
        layout.offline_key("v"),
        layout.state_key("v"),
        layout.stale_key("v"),
        layout.view_lease_key("v"),
        layout.split_key("svc", "r1", "train"),
        layout.training_set_manifest_key("svc", "r1"),
        layout.latest_key(layout.training_set_prefix("svc")),
        layout.model_card_key("m", "v1"),
        layout.decision_key("m", "v1"),
        layout.stages_key("m"),
        layout.inference_log_prefix("/inference-log/", "m"),
        layout.monitoring_prefix("m"),
        layout.drift_check_key("m", "c1", "json"),
        layout.drift_check_key("m", "c1", "prom"),
        layout.latest_key(layout.monitoring_prefix("m")),
        layout.latest_metrics_key("m"),
        f"{layout.model_version_prefix('m', 'v1')}/{layout.REFERENCE_PROFILE_FILE}",
        layout.audit_prefix(),
    ]
    assert len(set(keys)) == len(keys)
    assert all(not k.startswith("/") and not k.endswith("/") and "//" not in k for k in keys)
    assert layout.inference_log_prefix("/inference-log/", "m") == "inference-log/m"
