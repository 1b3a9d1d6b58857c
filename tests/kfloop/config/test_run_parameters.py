"""The run form's typed parameters: defaults are the config's values; a changed one sets its key and is
validated by the config model (a bad value names the parameter); an unchanged one leaves an edited
config_json alone; the KFP component's signature lists exactly these parameters."""

from __future__ import annotations

import inspect
import json

import pytest

from kfloop.config import config_to_json, load_config
from kfloop.config.run_parameters import (
    NAMES,
    apply_run_parameters,
    parse_run_parameter,
    run_parameter_defaults,
)
from kfloop.errors import ConfigError
from kfloop.pipelines.components import config_component
from tests.conftest import REPO

FRAUD = REPO / "examples" / "fraud" / "kfloop.yaml"


def test_defaults_are_the_configs_values_and_the_component_takes_exactly_them() -> None:
    config = load_config(FRAUD)
    defaults = run_parameter_defaults(config)
    assert defaults["epochs"] == config.training.epochs and defaults["framework"] == config.training.framework
    assert defaults["gate_tolerance"] == config.training.gate.tolerance and defaults["training_window"] == ""
    signature = list(inspect.signature(config_component).parameters)
    assert signature == ["config_json", "defaults_json", *NAMES]


def test_changed_parameters_set_their_keys_and_unchanged_ones_keep_an_edited_config() -> None:
    config = load_config(FRAUD)
    defaults = json.dumps(run_parameter_defaults(config))
    edited = json.loads(config_to_json(config))
    edited["training"]["batch_size"] = 256  # the advanced override, edited in the form
    values = run_parameter_defaults(config) | {"epochs": 3, "learning_rate": 0.01, "training_window": "30d"}
    run = apply_run_parameters(json.dumps(edited), defaults, values)
    assert (run.training.epochs, run.training.learning_rate) == (3, 0.01)
    assert run.features.training_window == "30d"
    assert run.training.batch_size == 256  # batch_size left at its compiled default: the edited value stays
    assert run.training.framework == config.training.framework


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, r"epochs=0.*training\.epochs"),
        ({"framework": "sklearn"}, r"framework='sklearn'.*training\.framework"),
        ({"learning_rate": 2.0}, r"learning_rate=2\.0.*training\.learning_rate"),
        ({"training_window": "2h"}, r"training_window='2h'.*features\.training_window"),
    ],
)
def test_a_bad_parameter_fails_naming_it(values: dict, message: str) -> None:
    config = load_config(FRAUD)
    with pytest.raises(ConfigError, match=message):
        apply_run_parameters(config_to_json(config), json.dumps(run_parameter_defaults(config)), values)


def test_the_cli_form_of_a_parameter() -> None:
    assert parse_run_parameter("epochs=5") == ("epochs", 5)
    assert parse_run_parameter(" learning_rate = 0.5") == ("learning_rate", 0.5)
    with pytest.raises(ConfigError, match="one of framework, epochs"):
        parse_run_parameter("epoch=5")
    with pytest.raises(ConfigError, match="epochs takes a whole number"):
        parse_run_parameter("epochs=many")


def test_kfloop_run_refuses_a_bad_parameter_before_running_anything(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from kfloop.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "-c", str(FRAUD), "--param", "epochs=0"])
    assert result.exit_code == 2, result.output
    assert "epochs=0" in result.output and "training.epochs" in result.output
    assert not (tmp_path / ".kfloop").exists()  # no step ran
