"""Config: every shipped YAML loads; each invalid config fails with its key path and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kfloop.config import Config, config_from_json, config_schema, config_to_json, load_config
from kfloop.errors import ConfigError
from tests.conftest import REPO

INVALID = sorted((Path(__file__).parent / "invalid_configs").glob("*.yaml"))
SHIPPED = sorted(REPO.glob("examples/**/kfloop*.yaml"))


def test_shipped_configs_exist() -> None:
    assert REPO / "examples" / "fraud" / "kfloop.yaml" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.source.timestamp_column in cfg.source.columns


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_fails_with_key_path(path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert expect in message, message


def test_invalid_folder_is_populated() -> None:
    assert len(INVALID) >= 10


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen() -> None:
    cfg = load_config(REPO / "examples/fraud/kfloop.yaml")
    with pytest.raises(Exception, match="frozen"):
        cfg.project = "other"  # type: ignore[misc]


def test_json_round_trip_is_lossless() -> None:
    cfg = load_config(REPO / "examples/fraud/kfloop.yaml")
    assert config_from_json(config_to_json(cfg)) == cfg


def test_schema_forbids_unknown_keys() -> None:
    schema = config_schema()
    assert schema["additionalProperties"] is False
    assert "source" in schema["required"]
    json.dumps(schema)  # serializable for editors


def test_a_task_switched_in_an_overlay_says_how_to_undo_the_bases_other_task_settings(tmp_path: Path) -> None:
    base = {
        "project": "demo",
        "training": {"gate": {"min_roc_auc": 0.9}},
        "source": {
            "uri": "x.csv",
            "entity_keys": ["c"],
            "timestamp_column": "ts",
            "label_column": "y",
            "columns": {"c": "string", "ts": "timestamp", "y": "float64"},
        },
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    overlay = tmp_path / "regression.yaml"
    overlay.write_text("extends: base.yaml\ntraining: {task: regression}\n")
    with pytest.raises(ConfigError, match=r"set it back to its default in this file \(gate: \{min_roc_auc: 0.8\}\)"):
        load_config(overlay)
    overlay.write_text("extends: base.yaml\ntraining: {task: regression, gate: {min_roc_auc: 0.8}}\n")
    assert load_config(overlay).training.task == "regression"
