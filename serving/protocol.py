"""Requests in, columns out: KServe V1 (``instances``) and V2 / Open Inference Protocol (named tensors, REST
or gRPC) decoded into one equal-length array per declared column, with a 4xx naming the field for every
client mistake; and the scores encoded back in the protocol the client spoke.

The spec is the contract: V2 inputs are ``[n]`` (or ``[n, 1]``) tensors named by column, strings as
``BYTES``, numbers as ``FP*``/``INT*``; outputs are ``score`` (FP32), ``label`` (INT64), ``defaulted``
(BOOL) and, with ``serving.unknown_category: flag``, ``violations`` (BYTES: the data-contract checks a row
failed, comma-separated); a multiclass model's ``label`` is a class name (BYTES) and it adds
``probabilities`` (FP32 ``[n, k]``, columns in class order, the class names as JSON text in the tensor's
``classes`` parameter; V1: ``{class: probability}`` per prediction); the response carries the model version.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kfloop.config import ColumnType, Config
from kfloop.errors import PayloadTooLargeError, RequestError

Kind = Literal["string", "number"]
Protocol = Literal["v1", "v2", "grpc"]

#: Output tensor names (V2) and prediction keys (V1).
SCORE, LABEL, DEFAULTED, VIOLATIONS = "score", "label", "defaulted", "violations"
#: Multiclass: the probability of every class ([n, k], class order) and its tensor parameter naming the classes.
PROBABILITIES, CLASSES = "probabilities", "classes"
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_NUMERIC_TYPES = _INT_TYPES | {"FP16", "FP32", "FP64"}
OUTPUTS = (SCORE, LABEL, DEFAULTED, VIOLATIONS, PROBABILITIES)
_V2_TYPE = {"string": "BYTES", "number": "FP64"}


@dataclass(frozen=True)
class ColumnSpec:
    """One request column: its name, kind and whether null (V1 ``null``, V2 NaN) is allowed."""

    name: str
    kind: Kind
    nullable: bool = True
    minimum: float | None = None  # the data contract's bounds: the model never saw values outside them
    maximum: float | None = None
    integer: bool = False  # an int64 column: 7.0 is 7, 7.5 is the client's mistake (a 400), never a silent code

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": _V2_TYPE[self.kind], "shape": [-1]}


def request_specs(config: Config) -> tuple[ColumnSpec, ...]:
    """What a client sends the transformer: the entity keys (strings, never null), then the request
    features with the data contract's nullability."""
    cols = config.source.columns
    specs = [
        ColumnSpec(key, _kind(cols[key]), nullable=False, integer=cols[key] is ColumnType.INT64)
        for key in config.source.entity_keys
    ]
    for col in config.features.request_features:
        if col in config.source.entity_keys:
            continue  # sent once, as a key; the model takes it as an input too
        rule = config.contract.columns.get(col)
        nullable = rule is None or rule.nullable is not False
        low, high = (rule.min, rule.max) if rule is not None else (None, None)
        specs.append(ColumnSpec(col, _kind(cols[col]), nullable, low, high, cols[col] is ColumnType.INT64))
    return tuple(specs)


def model_specs(numeric: Sequence[str], categorical: Sequence[str]) -> tuple[ColumnSpec, ...]:
    """What the predictor takes: the model's input columns (missing values are imputed, so nullable)."""
    return tuple([ColumnSpec(c, "number") for c in numeric] + [ColumnSpec(c, "string") for c in categorical])


def output_metadata(
    violations: bool = False, label: bool = True, classes: bool = False, n_classes: int = -1
) -> list[dict[str, Any]]:
    """The declared outputs; ``violations`` only where rows can be flagged (``unknown_category: flag``), ``label``
    only for a classifier (a regressor's ``score`` is its prediction): 0/1, or a class name (``classes``, which
    adds ``probabilities`` of shape [-1, k]: ``n_classes``, -1 while not known)."""
    outputs = [
        {"name": SCORE, "datatype": "FP32", "shape": [-1]},
        *([{"name": LABEL, "datatype": "BYTES" if classes else "INT64", "shape": [-1]}] if label else []),
        {"name": DEFAULTED, "datatype": "BOOL", "shape": [-1]},
    ]
    if violations:
        outputs.append({"name": VIOLATIONS, "datatype": "BYTES", "shape": [-1]})
    if classes and label:
        outputs.append({"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, n_classes]})
    return outputs


def _kind(column_type: ColumnType) -> Kind:
    return "number" if column_type in (ColumnType.INT64, ColumnType.FLOAT64) else "string"


# --- decoding -------------------------------------------------------------------------------------
def requested_outputs(payload: Any, available: Sequence[str] = OUTPUTS) -> list[str]:
    """The V2 outputs the client asked for (empty: all); one this endpoint does not serve is a 400."""
    asked = [o.name for o in getattr(payload, "request_outputs", None) or ()]
    bad = [o for o in asked if o not in available]
    if bad:
        raise RequestError(
            f"unknown output(s) {', '.join(repr(o) for o in bad)}: the outputs are {', '.join(available)}"
        )
    return asked


def protocol_of(payload: Any) -> Protocol:
    if isinstance(payload, InferRequest):
        return "grpc" if payload.from_grpc else "v2"
    return "v1"


def decode(payload: Any, specs: Sequence[ColumnSpec], max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """{column: array} (strings as object arrays, numbers as float64 with NaN for null) and the row count."""
    if isinstance(payload, (bytes, str)):  # KServe passes non-JSON content types through undecoded
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            raise RequestError(f"the request body is not valid JSON: {err}") from err
    if isinstance(payload, InferRequest):
        columns = _decode_v2(payload, specs)
    elif isinstance(payload, Mapping):
        columns = _decode_v1(payload, specs, max_rows)
    else:
        raise RequestError("the request body must be a JSON object with 'instances' (V1) or 'inputs' (V2)")
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        raise RequestError("the request has no rows")
    if n > max_rows:
        raise PayloadTooLargeError(f"the request has {n} rows; at most {max_rows} per request")
    return columns, n


def _decode_v1(body: Mapping, specs: Sequence[ColumnSpec], max_rows: int) -> dict[str, np.ndarray]:
    instances = body.get("instances")
    if instances is None:
        raise RequestError("missing field 'instances' (a list of objects, one per row)")
    if not isinstance(instances, list):
        raise RequestError("field 'instances' must be a list of objects")
    if len(instances) > max_rows:
        raise PayloadTooLargeError(f"the request has {len(instances)} rows; at most {max_rows} per request")
    values: dict[str, list] = {s.name: [] for s in specs}
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise RequestError(f"instances[{i}] must be an object of column: value, got {type(row).__name__}")
        for spec in specs:
            if spec.name not in row:
                raise RequestError(f"instances[{i}]: missing field {spec.name!r}")
            values[spec.name].append(_check_value(row[spec.name], spec, f"instances[{i}].{spec.name}"))
    return {s.name: _array(values[s.name], s) for s in specs}


def _check_value(value: Any, spec: ColumnSpec, where: str) -> Any:
    if value is None:
        if not spec.nullable:
            raise RequestError(f"{where}: must not be null")
        return None
    if spec.kind == "string":
        if not isinstance(value, str):
            raise RequestError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError as err:
        raise RequestError(f"{where}: {value} is too large for a number") from err
    if not math.isfinite(number):
        if math.isnan(number) and spec.nullable:
            return None
        raise RequestError(f"{where}: must be a finite number, got {value!r}")
    if spec.integer and not number.is_integer():
        raise RequestError(f"{where}: {value!r} is not a whole number ({spec.name} is an int64 column)")
    _check_range(number, spec, where)
    return number


def _check_range(value: float, spec: ColumnSpec, where: str) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise RequestError(f"{where}: {value:g} is below the data contract's min {spec.minimum:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise RequestError(f"{where}: {value:g} is above the data contract's max {spec.maximum:g}")


def _array(values: list, spec: ColumnSpec) -> np.ndarray:
    if spec.kind == "string":
        return np.array(values, dtype=object)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _decode_v2(request: InferRequest, specs: Sequence[ColumnSpec]) -> dict[str, np.ndarray]:
    by_name: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.name in by_name:
            raise RequestError(f"input {tensor.name!r} appears twice")
        by_name[tensor.name] = tensor
    missing = [s.name for s in specs if s.name not in by_name]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(repr(m) for m in missing)}")
    known = {s.name for s in specs}
    unknown = [name for name in by_name if name not in known]
    if unknown:
        raise RequestError(
            f"unknown input(s) {', '.join(repr(u) for u in unknown)}: the model metadata lists the inputs"
        )
    asked = [o.name for o in request.request_outputs or ()]
    if any(o not in OUTPUTS for o in asked):
        bad = ", ".join(repr(o) for o in asked if o not in OUTPUTS)
        raise RequestError(f"unknown output(s) {bad}: the outputs are {', '.join(OUTPUTS)}")
    out: dict[str, np.ndarray] = {}
    n = None
    for spec in specs:
        tensor = by_name[spec.name]
        column = _tensor_column(tensor, spec)
        if n is None:
            n = len(column)
        elif len(column) != n:
            raise RequestError(f"input {spec.name!r} has {len(column)} rows, the first input has {n}")
        out[spec.name] = column
    return out


def _null_if_empty(value: Any, spec: ColumnSpec) -> Any:
    """A BYTES tensor cannot hold a null: in a nullable string column an empty element is the null (what
    ``kfloop.serving.client`` sends for None), as a missing value was at ingest, not a category "" that the
    contract would refuse."""
    return None if value == "" and spec.nullable else value


def _tensor_column(tensor: Any, spec: ColumnSpec) -> np.ndarray:
    name, datatype, shape = spec.name, tensor.datatype, list(tensor.shape)
    if spec.kind == "string" and datatype != "BYTES":
        raise RequestError(f"input {name!r}: datatype must be BYTES (a string column), got {datatype}")
    if spec.kind == "number" and datatype not in _NUMERIC_TYPES:
        raise RequestError(f"input {name!r}: datatype must be numeric (FP64, FP32, INT64 …), got {datatype}")
    if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1) or any(d < 0 for d in shape):
        raise RequestError(f"input {name!r}: shape must be [n] or [n, 1], got {shape}")
    raw = getattr(tensor, "_raw_data", None)
    if raw is not None:  # gRPC raw_input_contents / REST binary extension: typed by construction
        try:
            values = tensor.as_numpy().reshape(-1)
            if spec.kind == "string":
                decoded = (v.decode() if isinstance(v, bytes) else v for v in values)
                return np.array([_null_if_empty(v, spec) for v in decoded], dtype=object)
        except (ValueError, InvalidInput, struct.error, UnicodeDecodeError) as err:
            raise RequestError(f"input {name!r}: raw data does not match {datatype} {shape} ({err})") from err
        return _finite(values.astype(np.float64), spec)
    data = tensor.data
    data = list(data) if not isinstance(data, list) else data
    if data and isinstance(data[0], list):
        data = [v for row in data for v in (row if isinstance(row, list) else [row])]
    expected = math.prod(shape)
    if len(data) != expected:
        raise RequestError(f"input {name!r}: shape {shape} needs {expected} values, got {len(data)}")
    if spec.kind == "string":
        out = []
        for i, item in enumerate(data):
            try:
                v = item.decode("utf-8") if isinstance(item, bytes) else item
            except UnicodeDecodeError as err:
                raise RequestError(f"input {name!r}[{i}]: not valid UTF-8") from err
            if v is None and spec.nullable:  # JSON null in a nullable string column, as V1 allows
                out.append(None)
                continue
            if not isinstance(v, str):
                raise RequestError(f"input {name!r}[{i}]: expected a string, got {type(v).__name__} {v!r}")
            out.append(_null_if_empty(v, spec))
        return np.array(out, dtype=object)
    integers = datatype in _INT_TYPES
    for i, v in enumerate(data):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            if v is None and spec.nullable:
                continue
            raise RequestError(f"input {name!r}[{i}]: expected a number, got {type(v).__name__} {v!r}")
        if integers and isinstance(v, (float, np.floating)) and not float(v).is_integer():
            raise RequestError(f"input {name!r}[{i}]: {datatype} needs whole numbers, got {v!r}")
    try:
        values = np.array([np.nan if v is None else v for v in data], dtype=np.float64)
    except OverflowError as err:
        raise RequestError(f"input {name!r}: a value is too large for a number") from err
    return _finite(values, spec)


#: Columns of up to this many values are checked in Python first: a one-row request's column is one value,
#: and numpy's fixed cost per call (several µs for each of the checks below) was most of its decoding.
_SMALL = 64


def _clean(values: list[float], spec: ColumnSpec) -> bool:
    """Whether every value passes :func:`_finite`'s checks (then there is nothing to report)."""
    low, high = spec.minimum, spec.maximum
    for v in values:
        if math.isnan(v):  # a null
            if not spec.nullable:
                return False
            continue
        if v in (math.inf, -math.inf) or (spec.integer and not v.is_integer()):
            return False
        if (low is not None and v < low) or (high is not None and v > high):
            return False
    return True


def _finite(values: np.ndarray, spec: ColumnSpec) -> np.ndarray:
    """``values`` when they are finite (NaN only where nullable), whole for an int64 column and within the
    contract's bounds; else a RequestError naming the first offending row."""
    if len(values) <= _SMALL and _clean(values.tolist(), spec):
        return values
    bad = np.isinf(values) | (np.isnan(values) & (not spec.nullable))
    if bad.any():
        i = int(np.argmax(bad))
        raise RequestError(f"input {spec.name!r}[{i}]: must be a finite number, got {float(values[i])!r}")
    if spec.integer:
        fractional = np.isfinite(values) & (values != np.floor(values))
        if fractional.any():
            i = int(np.argmax(fractional))
            raise RequestError(
                f"input {spec.name!r}[{i}]: {float(values[i])!r} is not a whole number ({spec.name} is an int64 column)"
            )
    for bound, outside in ((spec.minimum, values < (spec.minimum or 0)), (spec.maximum, values > (spec.maximum or 0))):
        if bound is not None and outside.any():
            i = int(np.argmax(outside))
            _check_range(float(values[i]), spec, f"input {spec.name!r}[{i}]")
    return values


# --- encoding -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    """One scored batch: what every protocol's response carries."""

    score: np.ndarray  # float32 [n]: a probability, or a regressor's prediction
    label: np.ndarray | None  # int64 [n], class names (object [n], multiclass), or None (a regressor)
    defaulted: np.ndarray  # bool [n]
    model_name: str
    model_version: str
    violations: np.ndarray | None = None  # str [n] ("" = clean) when rows are checked and flagged
    probabilities: np.ndarray | None = None  # multiclass: float32 [n, k], column j the probability of classes[j]
    classes: tuple[str, ...] | None = None  # multiclass: the class names, in the columns' order


@dataclass(frozen=True)
class Scored:
    """What one model answered for a batch (in process or over the network), before the transformer adds
    ``defaulted`` and ``violations``."""

    score: np.ndarray
    label: np.ndarray | None
    version: str
    probabilities: np.ndarray | None = None
    classes: tuple[str, ...] | None = None


def encode(
    scores: Scores, protocol: Protocol, request_id: str | None, outputs: Sequence[str] = ()
) -> dict | InferResponse:
    """The client's protocol; V2 returns only the requested ``outputs`` when the request names any."""
    if protocol == "v1":
        labels = [None] * len(scores.score) if scores.label is None else scores.label.tolist()
        rows = zip(scores.score.tolist(), labels, scores.defaulted.tolist(), strict=True)
        predictions = [
            {SCORE: s, LABEL: lab, DEFAULTED: d} if scores.label is not None else {SCORE: s, DEFAULTED: d}
            for s, lab, d in rows
        ]
        if scores.violations is not None:
            for prediction, violated in zip(predictions, scores.violations, strict=True):
                prediction[VIOLATIONS] = violated
        if scores.probabilities is not None and scores.classes is not None:
            for prediction, row in zip(predictions, scores.probabilities.tolist(), strict=True):
                prediction[PROBABILITIES] = dict(zip(scores.classes, row, strict=True))
        return {
            "predictions": predictions,
            "model_name": scores.model_name,
            "model_version": scores.model_version,
        }
    n = len(scores.score)
    tensors = [
        InferOutput(SCORE, [n], "FP32", scores.score.astype(np.float32).tolist()),
        *([] if scores.label is None else [_label_tensor(scores.label)]),
        InferOutput(DEFAULTED, [n], "BOOL", scores.defaulted.astype(bool).tolist()),
    ]
    if scores.violations is not None:
        tensors.append(InferOutput(VIOLATIONS, [n], "BYTES", scores.violations.tolist()))
    if scores.probabilities is not None and scores.classes is not None:
        tensors.append(_probabilities_tensor(scores.probabilities, scores.classes))
    tensors = [t for t in tensors if not outputs or t.name in outputs]
    return InferResponse(
        response_id=request_id or "",
        model_name=scores.model_name,
        infer_outputs=tensors,
        model_version=scores.model_version,
        from_grpc=protocol == "grpc",
        # also as a parameter: KServe's REST client (transformer → predictor) drops model_version
        parameters={"model_version": scores.model_version},
    )


def _label_tensor(label: np.ndarray) -> InferOutput:
    """0/1 labels as INT64; class names (multiclass) as BYTES."""
    if label.dtype == object:
        return InferOutput(LABEL, [len(label)], "BYTES", [str(v) for v in label.tolist()])
    return InferOutput(LABEL, [len(label)], "INT64", label.astype(np.int64).tolist())


def _probabilities_tensor(probabilities: np.ndarray, classes: Sequence[str]) -> InferOutput:
    """[n, k] FP32, row-major; the class of each column as JSON text in the ``classes`` parameter (a V2
    parameter is a scalar, and JSON keeps a class name with a comma whole)."""
    shape = [len(probabilities), len(classes)]
    data = np.asarray(probabilities, dtype=np.float32).reshape(-1).tolist()
    return InferOutput(PROBABILITIES, shape, "FP32", data, parameters={CLASSES: json.dumps(list(classes))})


def tensor_classes(parameters: Any) -> tuple[str, ...] | None:
    """The class names of a ``probabilities`` tensor's parameters (a REST dict or gRPC InferParameters)."""
    if not parameters or CLASSES not in parameters:
        return None
    value = parameters[CLASSES]
    text = value.string_param if hasattr(value, "string_param") else value
    try:
        found = json.loads(text)
    except (TypeError, ValueError):
        return None
    return tuple(str(c) for c in found) if isinstance(found, list) else None
