"""A registered version carries its reference profile: one file of the version, covered by the card's checksums,
named in the card's lineage, holding the train split's model inputs and the model's predictions on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfloop.config import parse_config
from kfloop.errors import CorruptModelError
from kfloop.layout import REFERENCE_PROFILE_FILE, model_version_prefix
from kfloop.monitoring.monitor import run_check
from kfloop.monitoring.profile import profile_from_bytes
from kfloop.monitoring.reference import reference_rows, write_reference_profile
from kfloop.registry import ModelRegistry
from kfloop.training.preprocess import feature_columns
from kfloop.training.sets import latest_training_set, load_split
from kfloop.training.trainer import load_exported
from tests.conftest import demo_config
from tests.serving.conftest import Trained, relaxed, served_champion


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return served_champion(tmp_path_factory.mktemp("reference"), relaxed, rows=3000, seed=7, run="reference-tests")


def test_a_registered_version_has_the_profile_of_its_train_split(trained: Trained, tmp_path: Path) -> None:
    config, storage = trained.config, trained.loop.storage
    registry = ModelRegistry(storage, config.training.model_name)
    card = registry.get(trained.champion).card
    entry = card["lineage"]["reference_profile"]
    assert entry["file"] == REFERENCE_PROFILE_FILE and REFERENCE_PROFILE_FILE in card["files"]  # checksummed
    train = load_split(storage, latest_training_set(config, storage), "train")
    assert (entry["split"], entry["rows"], entry["split_rows"], entry["sampled"]) == (
        "train",
        len(train),
        len(train),
        False,
    )
    numeric, categorical = feature_columns(config)
    assert (entry["numeric"], entry["categorical"]) == (numeric, categorical)
    assert entry["prediction"] == {"column": "score", "kind": "numeric"}

    profile = profile_from_bytes(registry.read_file(trained.champion, REFERENCE_PROFILE_FILE))
    assert list(profile.columns) == [*numeric, "score", *categorical] and profile.rows == len(train)
    amount = profile.columns["amount"]
    np.testing.assert_array_equal(amount.values, np.sort(train["amount"].dropna().to_numpy(dtype=np.float64)))
    channel = profile.columns["channel"]
    assert channel.kind == "categorical" and channel.categories == train["channel"].value_counts().to_dict()
    served = load_exported(registry.fetch(trained.champion, tmp_path / "model"))(train)  # what serving scores
    np.testing.assert_allclose(profile.columns["score"].values, np.sort(served.astype(np.float64)), rtol=1e-5)


def test_a_corrupted_profile_fails_loading_with_its_name(trained: Trained, tmp_path: Path) -> None:
    config, storage = trained.config, trained.loop.storage
    registry = ModelRegistry(storage, config.training.model_name)
    key = f"{model_version_prefix(config.training.model_name, trained.champion)}/{REFERENCE_PROFILE_FILE}"
    good = storage.read_bytes(key)
    storage.write_bytes(key, good[:-1] + bytes([good[-1] ^ 1]))
    try:
        with pytest.raises(CorruptModelError, match=REFERENCE_PROFILE_FILE.replace(".", r"\.")):
            registry.read_file(trained.champion, REFERENCE_PROFILE_FILE)
        with pytest.raises(CorruptModelError, match="checksum mismatch"):
            registry.verify(trained.champion)  # what promotion and serving run: the profile is part of the version
        with pytest.raises(CorruptModelError, match=REFERENCE_PROFILE_FILE.replace(".", r"\.")):
            run_check(config, storage)
    finally:
        storage.write_bytes(key, good)
    registry.verify(trained.champion)


def test_a_large_split_is_sampled_seeded_up_to_the_configured_rows(tmp_path: Path) -> None:
    data = demo_config(tmp_path).model_dump(mode="json")
    data["monitoring"] = {"reference_rows": 100, "window": {"rows": 200}, "min_rows": 50}
    config = parse_config(data, "test")
    numeric, categorical = feature_columns(config)
    rng = np.random.default_rng(3)
    n = 1000
    train = pd.DataFrame({c: rng.normal(size=n) for c in numeric} | {c: rng.choice(["a", "b"], n) for c in categorical})
    first = write_reference_profile(config, train, lambda f: np.full(len(f), 0.5, np.float32), tmp_path / "a")
    again = write_reference_profile(config, train, lambda f: np.full(len(f), 0.5, np.float32), tmp_path / "b")
    assert (first["rows"], first["split_rows"], first["sampled"], first["seed"]) == (100, n, True, config.training.seed)
    assert (tmp_path / "a" / REFERENCE_PROFILE_FILE).read_bytes() == (
        tmp_path / "b" / REFERENCE_PROFILE_FILE
    ).read_bytes()
    assert first == again
    picked = reference_rows(train, 100, config.training.seed)
    assert len(picked) == 100 and picked.index.is_monotonic_increasing  # a sample in the split's order
    assert reference_rows(train, n, 1) is train


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_prediction_column_is_what_serving_logs_for_the_task(task: str, tmp_path: Path) -> None:
    data = demo_config(tmp_path).model_dump(mode="json")
    data["training"]["task"] = task
    data["training"]["gate"]["compare_metric"] = None  # the task's own
    config = parse_config(data, "test")
    numeric, categorical = feature_columns(config)
    n = 300
    train = pd.DataFrame({c: np.arange(n, dtype=np.float64) for c in numeric} | {c: ["a"] * n for c in categorical})
    if task == "multiclass":  # probabilities [n, k]; the logged label is the likeliest class's name
        probabilities = np.tile([[0.2, 0.7, 0.1]], (n, 1))
        probabilities[:100] = [0.8, 0.1, 0.1]
        entry = write_reference_profile(config, train, lambda f: probabilities[: len(f)], tmp_path, ["0", "1", "2"])
        assert entry["prediction"] == {"column": "label", "kind": "categorical"}
        profile = profile_from_bytes((tmp_path / REFERENCE_PROFILE_FILE).read_bytes())
        assert profile.columns["label"].categories == {"0": 100, "1": 200}
    else:  # the predicted value, as served in score
        entry = write_reference_profile(config, train, lambda f: np.linspace(-1, 1, len(f)), tmp_path)
        assert entry["prediction"] == {"column": "score", "kind": "numeric"}
        profile = profile_from_bytes((tmp_path / REFERENCE_PROFILE_FILE).read_bytes())
        np.testing.assert_allclose(profile.columns["score"].values, np.linspace(-1, 1, n))
