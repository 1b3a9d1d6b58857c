"""Validate benchmark: the demo contract over 1M x 20 demo rows already in the lake.

- ours:  ``kfloop.components.validate.validate`` on a fresh copy of the ingested lake: a first pass over the
         duplicate key and event time, a second over full rows (every row check, completeness, duplicate
         resolution), the clean dataset (one zstd file per event date, sha256 + fsync per file, manifest
         commit), the quarantine file (rows + one reason column per check + all reasons), reports, audit record.
- peer:  pandera, what a user would pick instead: ``pandas.read_parquet`` of the lake folder, a
         ``DataFrameSchema`` with the same checks (nullable, ge/le, isin, str_matches, str_length,
         unique on the key, the rule as a dataframe-wide check), ``lazy=True`` to collect every failure,
         then drop the failing rows and write the clean frame to one Parquet file (less output than ours).
- floor: hand-written vectorized pandas/numpy on the same kind of frame: one boolean mask per check, OR the
         quarantine ones, ``duplicated`` on the key (keep last), filter; then the same outputs as ours, written
         the fastest plain way: the clean rows with ``to_parquet(partition_cols=["event_date"])`` (pyarrow's
         multithreaded dataset writer, one zstd file per date, as the clean dataset is laid out) and the
         quarantined rows with their failing checks in one zstd file. A second floor does the same on
         pyarrow-backed dtypes (C++ string kernels instead of Python loops).

What the floor still leaves out (ours does it): a bounded-memory second pass (the floor holds the whole frame),
keep-latest-by-event-time (the floor keeps the last row of a key), the exact-copy vs key-conflict split,
examples, the per-check reason columns, reports, sha256 + fsync of every file, the manifest commit under a lease.
``KFLOOP_BENCH_LEAN_FLOOR=1`` adds the floors as they were before, writing only the clean rows to one file (no
date partitions, no quarantine): less work than ours, so the ratio against them is not like for like.

Data: the demo generator with defects, plus 10 columns derived from the demo's 10 (20 in all), each
declared in ``source.columns`` and given contract rules, so every column is checked. Ingested once per
build (untimed); each repeat of every case starts from its own fresh copy of that lake, so ours really
validates (no fingerprint skip) and all cases read equally warm files.

Aims (issue 17): ours ≥ 4x pandera and ≥ 100 % of the floor's throughput.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case
from benchmarks.ingest import _demo_version
from kfloop import layout
from kfloop.components.ingest import ingest
from kfloop.components.validate import validate
from kfloop.config import ColumnType, Config, load_config, parse_config
from kfloop.config.contract import ColumnRule
from kfloop.contract.checks import row_checks
from kfloop.demo import DEFAULT_START, DefectSpec, DemoSpec, generate, write_frame
from kfloop.storage import LocalStorage

ROWS = 1_000_000
SEED = 42
#: Set to 1 to add the lean floors (clean rows to one file only) as further floor cases.
LEAN_FLOOR_ENV = "KFLOOP_BENCH_LEAN_FLOOR"
CONFIG_PATH = ROOT / "examples" / "fraud" / "kfloop.yaml"
DEFECTS = DefectSpec(nulls=0.01, duplicates=0.005, out_of_range=0.004, unknown_categories=0.003)
#: Fixed validation time (the demo spans 90 days from DEFAULT_START), so freshness is reproducible.
NOW = DEFAULT_START + timedelta(days=100)
SEGMENTS = tuple(f"seg-{i}" for i in range(8))
CURRENCIES = ("USD", "EUR", "GBP")
BUCKETS = ("small", "medium", "large", "xlarge")
_REGIONS = np.array([f"{r}-{i:02d}" for r in ("EU", "US", "AP", "LA") for i in range(25)], dtype=object)

#: The 10 derived columns: type in ``source.columns`` and contract rule (quarantine severity).
EXTRA_COLUMNS: dict[str, tuple[str, dict[str, Any]]] = {
    "amount_x2": ("float64", {"min": 0, "max": 100_000}),
    "log_amount": ("float64", {"min": 0, "max": 12}),
    "distance_miles": ("float64", {"min": 0, "max": 20_000}),
    "hour_sin": ("float64", {"nullable": False, "min": -1, "max": 1}),
    "day_of_week": ("int64", {"nullable": False, "min": 0, "max": 6}),
    "is_weekend": ("int64", {"nullable": False, "min": 0, "max": 1}),
    "customer_segment": ("string", {"nullable": False, "allowed": list(SEGMENTS)}),
    "merchant_region": ("string", {"nullable": False, "regex": "[A-Z]{2}-[0-9]{2}", "max_length": 5}),
    "currency": ("string", {"nullable": False, "allowed": list(CURRENCIES)}),
    "amount_bucket": ("string", {"allowed": list(BUCKETS)}),
}
#: Rules for the three demo columns the example contract leaves unchecked.
DEMO_COLUMN_RULES: dict[str, dict[str, Any]] = {
    "customer_id": {"nullable": False, "regex": "c-[0-9]+", "max_length": 16},
    "merchant_id": {"nullable": False, "regex": "m-[0-9]+", "max_length": 16},
    "event_timestamp": {"nullable": False},
}


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the 10 derived columns (nulls and out-of-range values in the demo columns carry over)."""
    amount = frame["amount"].to_numpy(dtype=np.float64)
    ts = frame["event_timestamp"]
    cust = frame["customer_id"].str[2:].astype(np.int64).to_numpy()
    merch = frame["merchant_id"].str[2:].astype(np.int64).to_numpy()
    bucket = np.digitize(np.nan_to_num(amount, nan=0.0), [20.0, 100.0, 500.0])
    bucket_names = np.array(BUCKETS, dtype=object)[bucket]
    bucket_names[np.isnan(amount)] = None
    out = frame.copy()
    out["amount_x2"] = amount * 2
    out["log_amount"] = np.sign(amount) * np.log1p(np.abs(amount))
    out["distance_miles"] = frame["distance_from_home_km"].to_numpy(dtype=np.float64) * 0.621371
    out["hour_sin"] = np.sin(2 * np.pi * frame["hour_of_day"].to_numpy() / 24)
    out["day_of_week"] = ts.dt.dayofweek.to_numpy(dtype=np.int64)
    out["is_weekend"] = (out["day_of_week"] >= 5).astype(np.int64)
    out["customer_segment"] = np.array(SEGMENTS, dtype=object)[cust % len(SEGMENTS)]
    out["merchant_region"] = _REGIONS[merch % len(_REGIONS)]
    out["currency"] = np.array(CURRENCIES, dtype=object)[(cust * 7 + merch) % len(CURRENCIES)]
    out["amount_bucket"] = bucket_names
    return out


def _data_version() -> str:
    """Demo generator + derivation code: a change to either never reuses a stale cached file."""
    body = _demo_version() + inspect.getsource(derive) + repr(EXTRA_COLUMNS) + repr(DEFECTS)
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def source_parquet(rows: int, seed: int, data_dir: Path) -> Path:
    """The 20-column defective demo source for (rows, seed), generated once and cached."""
    path = data_dir / f"validate-{rows}-{seed}-{_data_version()}.parquet"
    if not path.is_file():
        frame = generate(DemoSpec(rows=rows, seed=seed, defects=DEFECTS)).frame
        write_frame(derive(frame), path, "parquet")
    return path


def bench_config(source: Path) -> Config:
    """The fraud example's config + the 10 derived columns, with rules on all 20 columns."""
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    data["source"].update(uri=str(source), format="parquet")
    data["source"]["columns"].update({name: typ for name, (typ, _) in EXTRA_COLUMNS.items()})
    rules = data["contract"]["columns"]
    for name, rule in [*DEMO_COLUMN_RULES.items(), *((n, r) for n, (_, r) in EXTRA_COLUMNS.items())]:
        rules[name] = {"severity": "quarantine", **rule}
    config = parse_config(data, "bench")
    unchecked = set(config.source.columns) - set(config.contract.columns)
    if unchecked:
        raise AssertionError(f"columns without a contract rule: {sorted(unchecked)}")
    return config


def ingest_template(config: Config, data_dir: Path) -> tuple[Path, int]:
    """Ingest the source once into ``data_dir/validate-lake`` (rebuilt every build: never stale)."""
    template = data_dir / "validate-lake"
    shutil.rmtree(template, ignore_errors=True)
    result = ingest(config, LocalStorage(template))
    if result.rows_quarantined:
        raise AssertionError(f"ingest quarantined {result.rows_quarantined} rows")
    return template, result.dataset_rows


# --- per-repeat workspaces ------------------------------------------------------------------------


def _workspace(template: Path) -> Path:
    """A fresh copy of the ingested lake: no clean dataset yet, so validate cannot skip."""
    work = Path(tempfile.mkdtemp(prefix="kfloop-bench-validate-"))
    shutil.copytree(template / "lake", work / "lake")
    return work


def _cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _lake_data(config: Config, work: Path) -> Path:
    return work / layout.data_prefix(config.source.dataset)


def _check(name: str, got: int, expected: int) -> None:
    if got != expected:
        raise AssertionError(f"{name} kept {got:,} clean rows, expected {expected:,}")


# --- ours -----------------------------------------------------------------------------------------


def run_ours(config: Config, work: Path, expected: int) -> None:
    result = validate(config, LocalStorage(work), now=NOW)
    if result.already_validated or result.clean_manifest_uri is None:
        raise AssertionError("ours skipped validation or failed the gate")
    _check("ours", result.report.rows_clean, expected)


# --- peer: pandera --------------------------------------------------------------------------------

_PANDAS_DTYPES: dict[ColumnType, Any] = {
    ColumnType.INT64: "int64",
    ColumnType.FLOAT64: "float64",
    ColumnType.STRING: object,
    ColumnType.BOOL: "bool",
    ColumnType.TIMESTAMP: pd.DatetimeTZDtype("us", "UTC"),
}


def _pandera_checks(rule: ColumnRule) -> list[Any]:
    import pandera.pandas as pa_

    checks = []
    if rule.min is not None:
        checks.append(pa_.Check.ge(rule.min))
    if rule.max is not None:
        checks.append(pa_.Check.le(rule.max))
    if rule.allowed is not None:
        checks.append(pa_.Check.isin(list(rule.allowed)))
    if rule.regex is not None:
        checks.append(pa_.Check.str_matches(f"^(?:{rule.regex})$"))  # str_matches anchors only the start
    if rule.max_length is not None:
        checks.append(pa_.Check.str_length(max_value=rule.max_length))
    return checks


def pandera_schema(config: Config) -> Any:
    """The contract as a pandera schema: the same checks, written with pandera's built-ins."""
    import pandera.pandas as pa_

    src, contract = config.source, config.contract
    columns = {}
    for name, typ in src.columns.items():
        rule = contract.columns.get(name) or ColumnRule()
        columns[name] = pa_.Column(_PANDAS_DTYPES[typ], checks=_pandera_checks(rule), nullable=rule.nullable)
    # the example's one rule (hour_of_day == event_timestamp.dt.hour), as a dataframe-wide check
    (rule,) = contract.rules
    hour = pa_.Check(lambda df: df["hour_of_day"] == df["event_timestamp"].dt.hour, name=rule.name)
    keys = list(contract.duplicates.keys) if contract.duplicates else None
    return pa_.DataFrameSchema(columns, checks=[hour], unique=keys, report_duplicates="exclude_last")


def run_peer(schema: Any, config: Config, work: Path, expected: int) -> None:
    """Validate lazily, drop every row pandera names in a failure case, write the rest."""
    import pandera.errors

    df = pd.read_parquet(_lake_data(config, work))
    try:
        schema.validate(df, lazy=True)
        bad = pd.Index([])
    except pandera.errors.SchemaErrors as err:
        bad = pd.Index(err.failure_cases["index"].dropna().unique())
    clean = df.drop(index=bad)
    clean.to_parquet(work / "clean.parquet", index=False)
    _check("pandera", len(clean), expected)


# --- floor: hand-written masks --------------------------------------------------------------------


def _np(mask: pd.Series) -> np.ndarray:
    """Boolean numpy mask; NA (pyarrow-backed nulls) counts as passing, like a NaN comparison."""
    return mask.fillna(False).to_numpy(dtype=bool)


def _column_masks(s: pd.Series, rule: ColumnRule) -> list[tuple[str, np.ndarray]]:
    """(check kind, mask of offending rows) per check on ``s``; nulls fail only the nullability check."""
    na = s.isna().to_numpy()
    masks = []
    if not rule.nullable:
        masks.append(("nullable", na))
    if rule.min is not None:
        masks.append(("min", _np(s < rule.min)))
    if rule.max is not None:
        masks.append(("max", _np(s > rule.max)))
    if rule.allowed is not None:
        masks.append(("allowed", ~s.isin(rule.allowed).to_numpy(dtype=bool) & ~na))
    if rule.regex is not None:
        masks.append(("regex", ~_np(s.str.fullmatch(rule.regex)) & ~na))
    if rule.max_length is not None:
        masks.append(("max_length", _np(s.str.len() > rule.max_length)))
    return masks


@dataclass(frozen=True)
class FloorResult:
    clean_rows: int
    failed: int  # rows failing quarantine checks (before duplicates)


def _reasons(failing: list[tuple[str, np.ndarray]], rows: np.ndarray) -> np.ndarray:
    """Per quarantined row, the ids of the checks it fails joined with "; " (object strings, vectorized)."""
    reasons = np.full(len(rows), "", dtype=object)
    for label, mask in failing:
        hit = mask[rows]
        if hit.any():
            sep = np.where(reasons[hit] == "", "", "; ")
            reasons[hit] = reasons[hit] + sep + label
    return reasons


def run_floor(
    config: Config, work: Path, expected: int | None, arrow: bool = False, same_outputs: bool = True
) -> FloorResult:
    """Masks per check, OR the quarantine ones, drop earlier duplicate keys; then ``same_outputs``: what ours
    writes (clean rows as one zstd file per event date, the quarantined rows with their reasons), else one zstd
    file of the clean rows only (the lean floor: less work than ours)."""
    src, contract = config.source, config.contract
    kwargs = {"dtype_backend": "pyarrow"} if arrow else {}
    df = pd.read_parquet(_lake_data(config, work), **kwargs)
    bad = np.zeros(len(df), dtype=bool)
    counts = {}
    failing = []
    for name, rule in contract.columns.items():
        for kind, mask in _column_masks(df[name], rule):
            counts[f"{name}.{kind}"] = int(mask.sum())
            if rule.severity == "quarantine":
                bad |= mask
                failing.append((f"{name}.{kind}", mask))
    # the rule (warn): rows where hour_of_day disagrees with the timestamp's hour
    counts["rule"] = int(_np(df["hour_of_day"] != df[src.timestamp_column].dt.hour).sum())
    failed = int(bad.sum())
    quarantined = bad.copy()
    if contract.duplicates:
        dup = df.duplicated(subset=list(contract.duplicates.keys), keep="last").to_numpy()
        quarantined &= ~dup
        bad |= dup
    clean = df[~bad]
    if same_outputs:
        ts = clean[src.timestamp_column].dt
        # the event date partition column: Arrow's date32 cast with pyarrow dtypes, a datetime64 floor without
        clean = clean.assign(event_date=ts.date if arrow else ts.normalize())
        clean.to_parquet(work / "clean", partition_cols=["event_date"], index=False, compression="zstd")
        rows = np.flatnonzero(quarantined)
        q = df.iloc[rows].assign(_reasons=_reasons(failing, rows))
        q.to_parquet(work / "quarantine.parquet", index=False, compression="zstd")
    else:
        clean.to_parquet(work / "clean.parquet", index=False, compression="zstd")
    if expected is not None:
        _check("floor (pyarrow dtypes)" if arrow else "floor", len(clean), expected)
    return FloorResult(len(clean), failed)


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """Generate (cached) and ingest (once) the 20-column demo, then the cases."""
    import pandera

    n = rows or ROWS
    data_dir = data_dir or ROOT / ".kfloop" / "bench" / "data"
    source = source_parquet(n, seed, data_dir)
    config = bench_config(source)
    template, lake_rows = ingest_template(config, data_dir)
    # expected clean rows, from the simplest implementation (every case must agree with it)
    probe = _workspace(template)
    try:
        expected = run_floor(config, probe, None, same_outputs=False)
    finally:
        _cleanup(probe)
    schema = pandera_schema(config)

    exp = expected.clean_rows

    def setup() -> Path:
        return _workspace(template)

    def floor(work: Path, arrow: bool = False, same_outputs: bool = True) -> None:
        run_floor(config, work, exp, arrow=arrow, same_outputs=same_outputs)

    cases = [
        Case("kfloop validate", "ours", lambda w: run_ours(config, w, exp), setup, _cleanup),
        Case("pandera lazy + drop", "peer", lambda w: run_peer(schema, config, w, exp), setup, _cleanup),
        Case("pandas masks", "floor", floor, setup, _cleanup),
        Case("pandas[pyarrow] masks", "floor", lambda w: floor(w, arrow=True), setup, _cleanup),
    ]
    lean = os.environ.get(LEAN_FLOOR_ENV) == "1"
    if lean:
        cases += [
            Case("pandas masks, one file", "floor", lambda w: floor(w, same_outputs=False), setup, _cleanup),
            Case(
                "pandas[pyarrow] masks, one file",
                "floor",
                lambda w: floor(w, arrow=True, same_outputs=False),
                setup,
                _cleanup,
            ),
        ]
    params = {
        "seed": seed,
        "demo_rows": n,
        "lake_rows": lake_rows,
        "columns": len(config.source.columns),
        "row_checks": len(row_checks(config.contract)),
        "defects": str(DEFECTS),
        "rows_failing_quarantine_checks": expected.failed,
        "rows_clean": expected.clean_rows,
        "source": str(source),
        "config": str(CONFIG_PATH),
        "batch_rows": config.source.batch_rows,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "pandera": pandera.__version__,
        "floor_outputs": "one file per date + quarantine" + (", and lean floors: one file" if lean else ""),
    }
    return Benchmark(
        "validate",
        "demo contract over 20-column lake rows",
        cases,
        rows=lake_rows,
        aims={"peer": 4.0, "floor": 1.0},
        params=params,
    )
