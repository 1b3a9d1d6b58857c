"""The inference log's table: its columns (derived from the config, so every file and every writer agrees)
and reading the log back (the monitor, ``kfloop serve check`` and tests). Writing is
:mod:`kfloop.serving.inference_log`'s business.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop.config import ColumnType, Config
from kfloop.errors import ConfigError
from kfloop.layout import inference_log_prefix
from kfloop.schema import ARROW_TYPES
from kfloop.storage import Storage

__all__ = ["inference_log_schema", "log_prefix", "logged_inputs", "read_inference_log"]

#: Columns the log adds to every row (one value per request).
TIMESTAMP, REQUEST_ID, MODEL_VERSION, PROTOCOL = "timestamp", "request_id", "model_version", "protocol"
#: The prediction columns, named as the predictor's V2 outputs are.
SCORE, LABEL, DEFAULTED = "score", "label", "defaulted"
#: Failed data-contract checks of a row, comma-separated ("" none; null when not checked): serving.unknown_category
VIOLATIONS = "violations"
#: Multiclass: every class's probability, a list per row in the class order of the row's model version
PROBABILITIES = "probabilities"

_ADDED_FIELDS = (
    pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field(REQUEST_ID, pa.string()),
    pa.field(MODEL_VERSION, pa.string()),
    pa.field(PROTOCOL, pa.string()),
)
_OUTPUT_FIELDS = (
    pa.field(SCORE, pa.float64()),
    pa.field(LABEL, pa.int64()),
    pa.field(DEFAULTED, pa.bool_()),
    pa.field(VIOLATIONS, pa.string()),
)
_ADDED = frozenset(f.name for f in _ADDED_FIELDS)


def inference_log_schema(config: Config) -> pa.Schema:
    """The log's columns, derived from the config so every file (and every writer) agrees.

    Entity keys and request features keep their source types. Stored features keep theirs where the model
    takes them as they are: strings (a table's category), integer codes listed in ``features.categorical``,
    flags; numbers are float64, the dtype the model consumes (integer counts are exact in float64 up to 2**53).
    """
    stored = config.features.feature_types()
    inputs = [
        pa.field(c, _stored_type(config, c, stored[c]) if c in stored else ARROW_TYPES[config.source.columns[c]])
        for c in logged_inputs(config)
    ]
    outputs = list(_OUTPUT_FIELDS)
    if config.training.task == "multiclass":  # the label is a class name; regression logs it null
        outputs[1] = pa.field(LABEL, pa.string())
        outputs.append(pa.field(PROBABILITIES, pa.list_(pa.float64())))
    fields = [*_ADDED_FIELDS, *inputs, *outputs]
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            "serving.inference_log: column name(s) used twice (entity key, request feature, stored feature or "
            f"one of {', '.join(sorted(_ADDED | {SCORE, LABEL, DEFAULTED, VIOLATIONS}))}): {', '.join(clashes)}"
        )
    return pa.schema(fields)


def _stored_type(config: Config, name: str, kind: ColumnType) -> pa.DataType:
    """A stored feature's log column type: numbers as the model consumes them (float64), categories and flags
    as declared (a categorical int64 code stays int64, as a categorical request feature does)."""
    numeric = kind is ColumnType.FLOAT64 or (kind is ColumnType.INT64 and name not in config.features.categorical)
    return pa.float64() if numeric else ARROW_TYPES[kind]


def logged_inputs(config: Config) -> list[str]:
    """The model-side columns of a row: entity keys, request features, stored features (in that order)."""
    features = config.features
    return list(dict.fromkeys([*config.source.entity_keys, *features.request_features, *features.feature_names()]))


def log_prefix(config: Config) -> str:
    """Storage prefix of one model's log (without a trailing slash)."""
    return inference_log_prefix(config.serving.inference_log.prefix, config.training.model_name)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _partition_date(key: str) -> date | None:
    for part in key.split("/"):
        if part.startswith("date="):
            try:
                return date.fromisoformat(part.removeprefix("date="))
            except ValueError:
                return None
    return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A file written under an older config: current columns, missing ones null, dropped ones left out."""
    arrays = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_inference_log(
    storage: Storage, config: Config, *, since: datetime | None = None, until: datetime | None = None
) -> pa.Table:
    """Every logged row with ``since <= timestamp < until`` (naive datetimes are UTC), oldest first.

    Date partitions outside the window are not read. The result has :func:`inference_log_schema`'s
    schema, also when nothing was logged.
    """
    schema = inference_log_schema(config)
    since, until = (None if t is None else _utc(t) for t in (since, until))
    tables = []
    for key in storage.list(log_prefix(config) + "/"):
        day = _partition_date(key)
        if not key.endswith(".parquet") or day is None:
            continue
        if (since and day < since.date()) or (until and day > until.date()):
            continue
        path = storage.local_path(key)
        source = str(path) if path is not None else pa.BufferReader(storage.read_bytes(key))
        tables.append(_conform(pq.read_table(source), schema))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    ts = table.column(TIMESTAMP)
    if since is not None:
        table = table.filter(pc.greater_equal(ts, pa.scalar(since, ts.type)))
        ts = table.column(TIMESTAMP)
    if until is not None:
        table = table.filter(pc.less(ts, pa.scalar(until, ts.type)))
    return table.sort_by(TIMESTAMP)
