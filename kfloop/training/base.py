"""The one trainer seam: what a framework module provides, and the map from framework name to module.

``kfloop.training.trainer`` does the framework-neutral work (preprocessing, threshold, metrics) and asks
``trainer_for(framework)`` for the rest. The map holds module *names*: a framework's module, and with it
torch or TensorFlow, is imported only when that framework is used. The framework modules import this
module and never ``trainer``, so there is no import cycle.

Serving does not come through here: ``model_io.load_arrays`` picks the loader from the exported files
(the same loader a module's ``load`` uses), so a served model needs neither trainer module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from kfloop.config import TrainingConfig
from kfloop.errors import ConfigError
from kfloop.training.model_io import ArrayPredictor
from kfloop.training.preprocess import Preprocessor

#: framework (``training.framework``) -> the module that trains and exports it.
TRAINERS: dict[str, str] = {
    "pytorch": "kfloop.training.torch_trainer",
    "tensorflow": "kfloop.training.tf_trainer",
}
FRAMEWORKS = tuple(TRAINERS)
#: framework -> the import packages whose versions can change what training makes of the same data.
PACKAGES: dict[str, tuple[str, ...]] = {"pytorch": ("torch",), "tensorflow": ("tensorflow", "keras")}


@dataclass(frozen=True)
class Split:
    """One split as model inputs: standardized numbers, category indices and 0/1 labels."""

    x_num: np.ndarray  # float32 [n, k]
    x_cat: np.ndarray  # int64 [n, m]
    y: np.ndarray  # float32 [n]


@dataclass
class Fit:
    """What a framework trainer returns: the network with its best weights and how it got there."""

    network: Any
    predict: ArrayPredictor  # (x_num, x_cat) -> probabilities [n]
    history: list[dict[str, float]]
    best_epoch: int
    versions: dict[str, str]


class Trainer(Protocol):
    """A framework module (``TRAINERS``' values): fit a network, export it, load the export back."""

    def fit(
        self, config: TrainingConfig, preprocessor: Preprocessor, train: Split, val: Split, pos_weight: float
    ) -> Fit:
        """Train on ``train``, early-stopped on ``val``; keep the best epoch's weights."""
        ...

    def export(self, network: Any, preprocessor: Preprocessor, directory: Path) -> Path:
        """Write the serving artifact of ``network`` into ``directory``; return its path (file or folder)."""
        ...

    def load(self, directory: Path) -> ArrayPredictor:
        """The artifact ``export`` wrote into ``directory``, as (x_num, x_cat) -> probabilities."""
        ...

    def versions(self) -> dict[str, str]:
        """The framework's package versions (imports the framework)."""
        ...


def check_framework(framework: str) -> str:
    """The module name of ``framework`` (nothing imported); a clear error for an unknown one."""
    try:
        return TRAINERS[framework]
    except KeyError:
        raise ConfigError(f"training.framework {framework!r} is not one of {', '.join(FRAMEWORKS)}") from None


def package_versions(framework: str) -> dict[str, str]:
    """Installed versions of ``framework``'s packages, from package metadata: nothing is imported (deciding to
    reuse a version must not load torch or TensorFlow), and a distribution may be named unlike its import
    (``tensorflow-cpu``)."""
    check_framework(framework)
    dists = importlib.metadata.packages_distributions()
    return {
        name: ",".join(sorted({importlib.metadata.version(d) for d in dists.get(name, [])})) or "not installed"
        for name in PACKAGES[framework]
    }


def trainer_for(framework: str) -> Trainer:
    """The module of ``framework``, imported on first use (and with it torch or TensorFlow)."""
    return cast(Trainer, importlib.import_module(check_framework(framework)))
