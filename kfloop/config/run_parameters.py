"""The settings a person changes between runs, as typed pipeline parameters: what the Kubeflow UI's run form
shows beside the source URI (``kfloop run --param NAME=VALUE`` locally).

Each parameter is one config key. Its default is the compiled config's value; the pipeline's first step
applies the parameters a run changed to the config (``config_json``, the advanced override of the whole
config) and validates the result with the config model, so a bad value fails the run at once, naming the
parameter. A parameter left at its compiled default changes nothing, so an edited ``config_json`` keeps its
own value for that key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kfloop.config import Config, config_from_json, config_to_json
from kfloop.errors import ConfigError


@dataclass(frozen=True)
class RunParameter:
    """One pipeline parameter: its name, the config key it sets, its type, and (for a text key that may be
    null) the text that means null."""

    name: str
    key: tuple[str, ...]
    kind: type
    null_text: str | None = None

    def default(self, config: Config) -> Any:
        value: Any = config.model_dump(mode="json")
        for part in self.key:
            value = value[part]
        return self.null_text if value is None and self.null_text is not None else value

    @property
    def dotted(self) -> str:
        return ".".join(self.key)

    @property
    def description(self) -> str:
        """The config key's own description (what the run form shows under the field)."""
        model: Any = Config
        field = None
        for part in self.key:
            field = model.model_fields[part]
            model = field.annotation
        text = (field.description if field else "") or ""
        empty = ' "" means null.' if self.null_text == "" else ""
        return f"{self.dotted}: {text}{empty}"


#: The run form's parameters, in the order the form shows them (after ``source_uri``).
RUN_PARAMETERS: tuple[RunParameter, ...] = (
    RunParameter("framework", ("training", "framework"), str),
    RunParameter("epochs", ("training", "epochs"), int),
    RunParameter("learning_rate", ("training", "learning_rate"), float),
    RunParameter("batch_size", ("training", "batch_size"), int),
    RunParameter("early_stopping_patience", ("training", "early_stopping_patience"), int),
    RunParameter("seed", ("training", "seed"), int),
    RunParameter("threshold_target", ("training", "threshold", "target"), float),
    RunParameter("gate_tolerance", ("training", "gate", "tolerance"), float),
    RunParameter("training_window", ("features", "training_window"), str, null_text=""),
)
NAMES = tuple(p.name for p in RUN_PARAMETERS)


def run_parameter_defaults(config: Config) -> dict[str, Any]:
    """Each parameter's default: the config's value (a null text key as its null text)."""
    return {p.name: p.default(config) for p in RUN_PARAMETERS}


def parse_run_parameter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (``kfloop run --param``) as the parameter's name and typed value."""
    name, eq, raw = text.partition("=")
    by_name = {p.name: p for p in RUN_PARAMETERS}
    if not eq or name.strip() not in by_name:
        raise ConfigError(f"--param {text!r}: expected NAME=VALUE with NAME one of {', '.join(NAMES)}")
    param = by_name[name.strip()]
    try:
        return param.name, param.kind(raw.strip())
    except ValueError as err:
        kind = {int: "a whole number", float: "a number"}.get(param.kind, "text")
        raise ConfigError(f"--param {text!r}: {param.name} takes {kind}") from err


def apply_run_parameters(config_json: str, defaults_json: str, values: dict[str, Any]) -> Config:
    """The run's config: ``config_json`` with every parameter whose value differs from its compiled default
    (``defaults_json``) set, validated; a ConfigError names the changed parameters and the problem."""
    defaults = json.loads(defaults_json)
    data = json.loads(config_json)
    changed = {}
    for param in RUN_PARAMETERS:
        value = values.get(param.name, defaults.get(param.name))
        if param.name not in defaults or value == defaults[param.name]:
            continue
        changed[param.name] = value
        node = data
        for part in param.key[:-1]:
            node = node.setdefault(part, {})
        node[param.key[-1]] = None if param.null_text is not None and value == param.null_text else value
    try:
        return config_from_json(json.dumps(data))
    except ConfigError as err:
        given = ", ".join(f"{n}={v!r}" for n, v in changed.items()) or "none changed"
        raise ConfigError(f"pipeline parameters ({given}): {err}") from err


def resolve_step(config_json: str, defaults_json: str, values: dict[str, Any]) -> str:
    """The pipeline's first step: the run's validated config as the JSON every later step reads."""
    return config_to_json(apply_run_parameters(config_json, defaults_json, values))
