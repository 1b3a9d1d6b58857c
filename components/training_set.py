"""Training-set stage: labels + event times → Feast point-in-time join → time-based splits.

Each labelled row asks Feast for the features as they were just before its event (``t - 1 µs``):
the state after the entity's previous events, exactly what the online store holds when the same
transaction arrives for scoring. No feature value from after the label's event time can appear.

Labels are checked here, before the join, not in the trainer: rows without a label are dropped and
counted (a nullable label column is normal: labels often arrive late), and a value the binary task cannot
use (anything but 0/1 or true/false) fails the step at once, naming the column and the values.
"""

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from kfloop import lake, layout
from kfloop.config import Config
from kfloop.config._base import METADATA_FIELDS
from kfloop.config.contract import parse_duration
from kfloop.config.features import AS_OF_OFFSET
from kfloop.errors import SourceError
from kfloop.feature_repo.store import objects_for, open_store
from kfloop.lineage.run import emits
from kfloop.step import new_run_id
from kfloop.storage import Storage


@dataclass(frozen=True)
class TrainingSet:
    """Where the splits are and what they hold (also written as ``manifest.json``)."""

    run_id: str
    prefix: str
    feature_service: str
    feature_service_version: str
    features: list[str]
    request_features: list[str]
    label: str
    rows: dict[str, int]
    time_range: dict[str, list[str]]
    content_hash: str
    input_content_hash: str
    unlabeled_rows_dropped: int = 0
    rows_before_window: int = 0  # labelled rows older than features.training_window (0 without one)
    #: The validate run's own quality report for the clean data read (``None`` for older clean datasets).
    quality_report: str | None = None
    schema_hash: str = ""


def service_version(config: Config) -> str:
    """Hash of the feature definitions: equal versions mean equal feature semantics. Full names (the model's
    input names) and ``source.available_after`` count too, so a champion is not scored on a split whose
    features mean something else; when unset they add nothing, so older versions stay the same. Attribute
    tables (``features.tables``) count the same way: only when there are some."""
    body = json.dumps(
        [v.model_dump(mode="json", exclude=set(METADATA_FIELDS)) for v in config.features.views], sort_keys=True
    )
    naming = "" if config.features.naming == "short" else f"naming={config.features.naming}"
    known = config.model_dump(mode="json")["source"]["available_after"]  # when values are known: semantics too
    body += json.dumps(known, sort_keys=True) if known else ""  # none declared: versions as before it existed
    tables = [t.model_dump(mode="json") for t in config.features.tables]  # attribute tables: their columns,
    body += json.dumps(tables, sort_keys=True) if tables else ""  # contracts, ttl; none: versions as before
    return hashlib.sha256((body + config.features.label_delay + naming).encode()).hexdigest()[:12]


def _labelled_rows(storage: Storage, manifest: lake.Manifest, config: Config) -> pd.DataFrame:
    src = config.source
    cols = list(
        dict.fromkeys([*src.entity_keys, src.timestamp_column, src.label_column, *config.features.request_features])
    )
    tables = list(lake.iter_dataset(storage, manifest, src.batch_rows, cols))
    return pa.concat_tables(tables).to_pandas()


def _binary_labels(frame: pd.DataFrame, label: str, dataset: str) -> tuple[pd.DataFrame, int]:
    """Rows with a label, the label as int64 0/1, and how many unlabeled rows were dropped.

    Raises when no row is labelled or a value is not 0/1 or a boolean: failing here takes seconds, in the
    trainer it took a whole run, and a model silently trained on coerced labels would be worse.
    """
    col = frame[label]
    missing = col.isna().to_numpy()
    if missing.all():
        raise SourceError(
            f"label column {label!r} is empty in all {len(frame):,} rows of {dataset!r}: a training set needs "
            "labelled rows"
        )
    present = col[~missing]
    if pd.api.types.is_bool_dtype(present) or pd.api.types.is_numeric_dtype(present):
        bad = ~present.isin([0, 1]).to_numpy()
    else:  # object: booleans (with nulls), strings, mixed
        bad = ~present.map(lambda v: isinstance(v, bool | np.bool_) or (_is_number(v) and v in (0, 1))).to_numpy()
    if bad.any():
        values = present[bad].drop_duplicates().head(5).tolist()
        hint = "declare it int64 or bool in source.columns" if any(isinstance(v, str) for v in values) else None
        raise SourceError(
            f"label column {label!r} of {dataset!r} has {int(bad.sum()):,} value(s) a binary task cannot use "
            f"(it needs 0/1 or true/false), e.g. {', '.join(map(repr, values))}: "
            f"{hint or 'fix the source or map the labels to 0/1'}"
        )
    kept = frame[~missing].copy()
    kept[label] = present.astype("int64").to_numpy()
    return kept.reset_index(drop=True), int(missing.sum())


def _task_labels(frame: pd.DataFrame, label: str, dataset: str, task: str) -> tuple[pd.DataFrame, int]:
    """Rows with a label and how many unlabeled rows were dropped. A binary label must be 0/1 (checked here);
    a regression or multiclass label keeps its values (its type was checked at config load and validate)."""
    if task == "binary":
        return _binary_labels(frame, label, dataset)
    missing = frame[label].isna().to_numpy()
    if missing.all():
        raise SourceError(
            f"label column {label!r} is empty in all {len(frame):,} rows of {dataset!r}: a training set needs "
            "labelled rows"
        )
    return frame[~missing].reset_index(drop=True), int(missing.sum())


def _in_window(labels: pd.DataFrame, ts: str, window: str | None) -> tuple[pd.DataFrame, int]:
    """The labelled rows within ``features.training_window`` of the newest one, and how many were older."""
    if window is None or labels.empty:
        return labels, 0
    cutoff = labels[ts].max() - parse_duration(window)
    inside = (labels[ts] > cutoff).to_numpy()
    return labels[inside].reset_index(drop=True), int((~inside).sum())


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def split_by_time(
    frame: pd.DataFrame, ts: str, fractions: tuple[float, float, float], keys: Sequence[str] = ()
) -> dict[str, pd.DataFrame]:
    """Train on the past, validate and test on the future: cut at time quantiles, no row in two splits.

    The rows are first put in one total order: time, then ``keys``, then every other column. The join
    returns rows that share a time in no fixed order, so without it the same rows gave other split bytes
    (another content hash, a model trained again) and ties at a cut fell into either split."""
    by = list(dict.fromkeys([ts, *keys, *frame.columns]))
    ordered = frame.sort_values(by, na_position="last").reset_index(drop=True)
    n = len(ordered)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return {"train": ordered.iloc[:a], "validation": ordered.iloc[a:b], "test": ordered.iloc[b:]}


@emits("training_set")
def build_training_set(
    config: Config, storage: Storage, environ: Mapping[str, str], store: FeatureStore | None = None
) -> TrainingSet:
    """Point-in-time join through the feature service, then splits written as Parquet + manifest."""
    src = config.source
    if src.label_column is None:
        raise SourceError("source.label_column is not set: a training set needs labels")
    manifest = lake.read_manifest(storage, layout.clean_dataset(src.dataset))
    if manifest is None or not manifest.files:
        raise SourceError(f"clean dataset {layout.clean_dataset(src.dataset)!r} is empty: run validation first")
    store = store or open_store(config, storage, environ)
    store.apply(objects_for(config, storage).all)
    labels, unlabeled = _task_labels(
        _labelled_rows(storage, manifest, config), src.label_column, src.dataset, config.training.task
    )
    labels, outside = _in_window(labels, src.timestamp_column, config.features.training_window)
    entity_df = labels.rename(columns={src.timestamp_column: "label_timestamp"})
    entity_df["event_timestamp"] = entity_df["label_timestamp"] - AS_OF_OFFSET
    service = store.get_feature_service(config.features.service)
    full = config.features.naming == "full"  # columns <view>__<feature>, the names feature_names() gives
    joined = store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=full).to_df()
    joined = joined.drop(columns=["event_timestamp"]).rename(columns={"label_timestamp": src.timestamp_column})
    features = config.features.feature_names()
    ordered = [*src.entity_keys, src.timestamp_column, *config.features.request_features, *features, src.label_column]
    joined = joined[list(dict.fromkeys(ordered))]
    parts = split_by_time(joined, src.timestamp_column, config.features.splits, src.entity_keys)
    run_id = new_run_id()
    service = config.features.service
    digest = hashlib.sha256()
    rows, ranges = {}, {}
    for name in layout.SPLITS:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(parts[name], preserve_index=False), buf, compression="zstd")
        storage.write_bytes(layout.split_key(service, run_id, name), buf.getvalue())
        digest.update(buf.getvalue())
        rows[name] = len(parts[name])
        col = parts[name][src.timestamp_column]
        ranges[name] = [col.min().isoformat(), col.max().isoformat()] if len(col) else []
    result = TrainingSet(
        run_id=run_id,
        prefix=storage.uri(layout.training_set_run_prefix(service, run_id)),
        feature_service=config.features.service,
        feature_service_version=service_version(config),
        features=features,
        request_features=list(config.features.request_features),
        label=src.label_column,
        rows=rows,
        time_range=ranges,
        content_hash=digest.hexdigest(),
        input_content_hash=manifest.content_hash,
        unlabeled_rows_dropped=unlabeled,
        rows_before_window=outside,
        quality_report=manifest.runs[-1].get("report") if manifest.runs else None,
        schema_hash=manifest.schema_hash,
    )
    body = json.dumps({**asdict(result), "created": datetime.now(UTC).isoformat()}, indent=2)
    storage.write_text(layout.training_set_manifest_key(service, run_id), body)
    storage.write_text(layout.latest_key(layout.training_set_prefix(service)), body)
    return result


def run_training_set_step(config_json: str) -> dict:
    """Entrypoint inside the pipeline step; a plain dict, so the component body needs no imports."""
    import os

    from kfloop.step import open_step

    config, storage = open_step(config_json)
    return asdict(build_training_set(config, storage, os.environ))
