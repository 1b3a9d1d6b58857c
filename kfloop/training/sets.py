"""Reading training sets back: the newest manifest of a feature service, and its splits.

The training-set stage writes them (``kfloop.components.training_set``); training, evaluation and
``kfloop predict`` read them through here, so no stage imports another.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow.parquet as pq

from kfloop import layout
from kfloop.config import Config
from kfloop.errors import SourceError
from kfloop.storage import Storage


def latest_training_set(config: Config, storage: Storage) -> dict:
    """The manifest of the newest training set of the config's feature service."""
    key = layout.latest_key(layout.training_set_prefix(config.features.service))
    try:
        return json.loads(storage.read_text(key))
    except FileNotFoundError as err:
        raise SourceError(f"no training set for {config.features.service!r}: run the training-set stage first") from err


def training_set(config: Config, storage: Storage, run_id: str) -> dict:
    """The manifest of training set ``run_id`` of the config's feature service: a distributed run's processes
    read the set the train step chose, not whatever is newest when each one starts."""
    key = layout.training_set_manifest_key(config.features.service, run_id)
    try:
        return json.loads(storage.read_text(key))
    except FileNotFoundError as err:
        raise SourceError(f"no training set {run_id!r} for {config.features.service!r} (no {key})") from err


def load_split(storage: Storage, manifest: dict, split: str) -> pd.DataFrame:
    """One split of a training set, as pandas."""
    key = layout.split_key(manifest["feature_service"], manifest["run_id"], split)
    return pq.read_table(io.BytesIO(storage.read_bytes(key))).to_pandas()
