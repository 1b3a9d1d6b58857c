"""Demo data: determinism, realism (learnable fraud), drift, injected defects, and file round trips."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kfloop.config import load_config
from kfloop.demo import (
    CHANNELS,
    COLUMNS,
    DEFAULT_START,
    DEFECT_KINDS,
    MERCHANT_CATEGORIES,
    NULLABLE_COLUMNS,
    DefectSpec,
    DemoSpec,
    DriftSpec,
    format_from_path,
    generate,
    write_frame,
)

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "kfloop.yaml"
AFTER = datetime(2026, 3, 1, tzinfo=UTC)
ALL_DEFECTS = DefectSpec(nulls=0.01, duplicates=0.01, wrong_types=0.01, out_of_range=0.01, unknown_categories=0.01)


@pytest.fixture(scope="module")
def frame20k() -> pd.DataFrame:
    return generate(DemoSpec(rows=20_000)).frame


# --- schema -------------------------------------------------------------------------------------------


def test_columns_equal_example_config() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert list(COLUMNS.items()) == [(name, t.value) for name, t in config.source.columns.items()]
    frame = generate(DemoSpec(rows=100)).frame
    assert list(frame.columns) == list(config.source.columns)


def test_row_count_and_types(frame20k: pd.DataFrame) -> None:
    f = frame20k
    assert len(f) == 20_000
    for name, logical in COLUMNS.items():
        col = f[name]
        if logical == "string":
            assert col.map(type).eq(str).all(), name
        elif logical == "timestamp":
            assert isinstance(col.dtype, pd.DatetimeTZDtype) and str(col.dtype.tz) == "UTC"
        else:
            assert col.dtype == np.dtype(logical), name
    assert f["transaction_id"].is_unique
    assert f["transaction_id"].str.fullmatch(r"tx-\d{9}").all()
    assert f["customer_id"].str.fullmatch(r"c-\d{5}").all()
    assert f["merchant_id"].str.fullmatch(r"m-\d{4}").all()
    assert f["event_timestamp"].is_monotonic_increasing
    assert f["event_timestamp"].min() >= DEFAULT_START
    assert f["event_timestamp"].max() < DEFAULT_START + timedelta(days=90)
    assert (f["hour_of_day"] == f["event_timestamp"].dt.hour).all()
    assert set(f["merchant_category"]) == set(MERCHANT_CATEGORIES)
    assert set(f["channel"]) == set(CHANNELS)
    assert (f["amount"] > 0).all() and (f["distance_from_home_km"] >= 0).all()
    assert set(f["is_fraud"].unique()) == {0, 1}
    # entity defaults: ~rows/50 customers and ~rows/200 merchants
    assert 300 <= f["customer_id"].nunique() <= 400
    assert 80 <= f["merchant_id"].nunique() <= 100
    # each merchant has exactly one category
    assert f.groupby("merchant_id")["merchant_category"].nunique().eq(1).all()


def test_entity_counts_and_span_are_configurable() -> None:
    start = datetime(2025, 6, 15, 13, 30)  # naive → UTC, not midnight
    spec = DemoSpec(rows=3000, seed=7, start=start, days=10, customers=25, merchants=12)
    f = generate(spec).frame
    assert spec.start == start.replace(tzinfo=UTC)
    assert f["customer_id"].nunique() <= 25 and f["merchant_id"].nunique() <= 12
    assert f["event_timestamp"].min() >= spec.start
    assert f["event_timestamp"].max() < spec.start + timedelta(days=10)
    assert (f["hour_of_day"] == f["event_timestamp"].dt.hour).all()


def test_small_frames_and_bad_specs() -> None:
    assert len(generate(DemoSpec(rows=1)).frame) == 1
    for bad in ({"rows": 0}, {"rows": 10, "days": 0}, {"rows": 10, "merchants": 5}, {"rows": 10, "customers": 0}):
        with pytest.raises(ValueError):
            DemoSpec(**bad)


# --- determinism and realism ----------------------------------------------------------------------------


def test_seeded_determinism(frame20k: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate(DemoSpec(rows=20_000)).frame, frame20k)
    other = generate(DemoSpec(rows=20_000, seed=43)).frame
    assert not other.equals(frame20k)
    assert not np.array_equal(other["amount"].to_numpy(), frame20k["amount"].to_numpy())


def test_fraud_rate(frame20k: pd.DataFrame) -> None:
    assert 0.01 <= frame20k["is_fraud"].mean() <= 0.03


def test_fraud_is_learnable_with_honest_features(frame20k: pd.DataFrame) -> None:
    f = frame20k
    x = pd.concat(
        [
            f[["amount", "distance_from_home_km", "hour_of_day"]],
            np.log(f["amount"]).rename("log_amount"),
            pd.get_dummies(f[["channel", "merchant_category"]], dtype=float),
        ],
        axis=1,
    )
    y = f["is_fraud"]
    train = np.random.default_rng(0).random(len(f)) < 0.7
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train], y[train])
    auc = roc_auc_score(y[~train], model.predict_proba(x[~train])[:, 1])
    assert auc >= 0.85, auc


def test_fraud_signal_directions(frame20k: pd.DataFrame) -> None:
    fraud, legit = frame20k[frame20k["is_fraud"] == 1], frame20k[frame20k["is_fraud"] == 0]
    assert fraud["amount"].median() > 3 * legit["amount"].median()
    assert fraud["distance_from_home_km"].gt(100).mean() > 5 * legit["distance_from_home_km"].gt(100).mean()
    assert fraud["hour_of_day"].lt(6).mean() > 3 * legit["hour_of_day"].lt(6).mean()
    assert fraud["channel"].eq("online").mean() > legit["channel"].eq("online").mean() + 0.2
    # bursts: fraud rows of one customer follow each other within minutes
    gaps = fraud.groupby("customer_id")["event_timestamp"].diff().dropna()
    assert (gaps < pd.Timedelta(minutes=30)).mean() > 0.5


# --- drift ---------------------------------------------------------------------------------------------


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    post = frame["event_timestamp"] >= AFTER
    return frame[~post], frame[post]


def test_amount_drift_scales_amounts_after_the_date() -> None:
    base = generate(DemoSpec(rows=20_000)).frame
    drifted = generate(DemoSpec(rows=20_000, drift=DriftSpec(after=AFTER, amount_shift=2.0))).frame
    (base_pre, base_post), (pre, post) = _split(base), _split(drifted)
    pd.testing.assert_frame_equal(pre, base_pre)  # nothing changes before the date
    pos, atm = post["channel"] != "atm", post["channel"] == "atm"
    ratio = post.loc[pos, "amount"] / base_post.loc[pos, "amount"]
    assert np.median(ratio) == pytest.approx(2.0, rel=0.01)
    assert (np.abs(ratio - 2.0) < 0.05).mean() > 0.99  # cent rounding and the 0.50 floor aside
    assert (post.loc[atm, "amount"] % 20 == 0).all()  # cash stays in notes


def test_category_drift_changes_the_mix() -> None:
    f = generate(DemoSpec(rows=30_000, drift=DriftSpec(after=AFTER, category_mix=True))).frame
    pre, post = (part["merchant_category"].value_counts(normalize=True) for part in _split(f))
    assert post["digital_goods"] > 2 * pre["digital_goods"]
    assert post["grocery"] < 0.8 * pre["grocery"]
    base_pre, base_post = (part["merchant_category"].value_counts(normalize=True) for part in _split(
        generate(DemoSpec(rows=30_000)).frame))  # fmt: skip
    assert abs(base_post["digital_goods"] - base_pre["digital_goods"]) < 0.01


def test_fraud_pattern_drift_moves_to_card_testing() -> None:
    f = generate(DemoSpec(rows=30_000, drift=DriftSpec.parse("fraud@2026-03-01"))).frame
    pre, post = (part[part["is_fraud"] == 1] for part in _split(f))
    assert pre["amount"].median() > 50 and post["amount"].median() < 5
    assert set(post["merchant_category"]) <= {"digital_goods", "entertainment"}
    assert pre["merchant_category"].isin(["electronics", "jewelry", "travel"]).mean() > 0.5
    assert post["channel"].eq("online").mean() > 0.9


# --- parsing -------------------------------------------------------------------------------------------


def test_drift_parse() -> None:
    spec = DriftSpec.parse("amounts,categories,fraud@2026-03-01")
    assert spec == DriftSpec(after=AFTER, amount_shift=1.5, category_mix=True, fraud_pattern=True)
    assert DriftSpec.parse("amounts=2.5@2026-03-01T12:00:00+02:00") == DriftSpec(
        after=datetime(2026, 3, 1, 10, tzinfo=UTC), amount_shift=2.5
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("amounts,categories", "KIND"),
        ("amounts@", "KIND"),
        ("amounts@2026-13-01", "2026-13-01"),
        ("amounts,prices@2026-03-01", "'prices'"),
        ("amounts,,fraud@2026-03-01", "''"),
        ("fraud,fraud@2026-03-01", "'fraud'"),
        ("amounts=big@2026-03-01", "'big'"),
        ("amounts=-1@2026-03-01", "amount_shift"),
    ],
)
def test_drift_parse_errors(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=re.escape(names)):
        DriftSpec.parse(text)


def test_defect_parse() -> None:
    assert DefectSpec.parse("nulls=0.01,duplicates=0.005") == DefectSpec(nulls=0.01, duplicates=0.005)
    assert DefectSpec.parse("") == DefectSpec() and not DefectSpec().any
    assert DefectSpec.parse(" wrong_types = 0.2 ").wrong_types == 0.2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("nulls=0.01,typos=0.1", "'typos'"),
        ("nulls", "'nulls'"),
        ("nulls=lots", "'lots'"),
        ("nulls=1.0", "nulls"),
        ("duplicates=-0.1", "duplicates"),
        ("nulls=nan", "nulls"),
        ("nulls=0.1,nulls=0.2", "twice"),
    ],
)
def test_defect_parse_errors(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=re.escape(names)):
        DefectSpec.parse(text)


# --- defects -------------------------------------------------------------------------------------------


def _rows(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    return frame[frame["transaction_id"].isin(ids)]


def _non_numeric(value: object) -> bool:
    return isinstance(value, str) and pd.isna(pd.to_numeric(value, errors="coerce"))


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_is_injected_exactly_and_visible(kind: str) -> None:
    rows, rate = 4000, 0.0125  # round(50.0) = 50
    data = generate(DemoSpec(rows=rows, defects=DefectSpec(**{kind: rate})))
    f, ids = data.frame, data.injected[kind]
    assert len(ids) == len(set(ids)) == round(rate * rows)
    assert all(not v for k, v in data.injected.items() if k != kind)
    assert f["event_timestamp"].is_monotonic_increasing
    hit = _rows(f, ids)
    if kind == "duplicates":
        assert len(f) == rows + len(ids)
        assert f.duplicated().sum() == len(ids)
        assert set(f.loc[f.duplicated(), "transaction_id"]) == set(ids)
        return
    assert len(f) == rows and len(hit) == len(ids)
    if kind == "nulls":
        assert (hit[list(NULLABLE_COLUMNS)].isna().sum(axis=1) == 1).all()
        assert f.isna().to_numpy().sum() == len(ids)
    elif kind == "wrong_types":
        bad = hit[["amount", "distance_from_home_km"]].map(_non_numeric)
        assert (bad.sum(axis=1) == 1).all()
        assert f[["amount", "distance_from_home_km"]].map(_non_numeric).to_numpy().sum() == len(ids)
    elif kind == "out_of_range":

        def out(g: pd.DataFrame) -> pd.Series:
            return (g["amount"] < 0) | (g["distance_from_home_km"] < 0) | ~g["hour_of_day"].between(0, 23)

        assert out(hit).all() and out(f).sum() == len(ids)
        assert hit["hour_of_day"].le(30).all()
    else:
        unknown = ~f["merchant_category"].isin(MERCHANT_CATEGORIES) | ~f["channel"].isin(CHANNELS)
        assert set(f.loc[unknown, "transaction_id"]) == set(ids)


def test_all_defects_together_leave_clean_rows_untouched() -> None:
    clean = generate(DemoSpec(rows=5000)).frame
    data = generate(DemoSpec(rows=5000, defects=ALL_DEFECTS))
    assert {k: len(v) for k, v in data.injected.items()} == dict.fromkeys(DEFECT_KINDS, 50)
    touched = set().union(*(data.injected[k] for k in DEFECT_KINDS if k != "duplicates"))
    untouched = data.frame[~data.frame["transaction_id"].isin(touched)].drop_duplicates()
    expected = clean[~clean["transaction_id"].isin(touched)]
    pd.testing.assert_frame_equal(untouched.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)


def test_defect_rates_exceeding_the_rows_are_rejected() -> None:
    with pytest.raises(ValueError, match="more rows"):
        generate(DemoSpec(rows=100, defects=DefectSpec(nulls=0.6, duplicates=0.6)))


# --- writing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.csv", "csv"), ("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.jsonl", "jsonl"),
     ("a.ndjson", "jsonl"), ("a.json", "jsonl"), ("dir/a.avro", "avro")],
)  # fmt: skip
def test_format_from_path(name: str, fmt: str) -> None:
    assert format_from_path(Path(name)) == fmt


def test_format_from_path_rejects_unknown_suffix() -> None:
    with pytest.raises(ValueError, match=r"\.txt"):
        format_from_path("data.txt")


def _read(path: Path, fmt: str) -> pd.DataFrame:
    """Read back with each format's own reader, typing columns as the writer intended."""
    if fmt == "parquet":
        return pq.read_table(path).to_pandas()
    if fmt == "avro":
        with path.open("rb") as fh:
            frame = pd.DataFrame(list(fastavro.reader(fh)))
    elif fmt == "csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True, format="ISO8601")
    return frame.astype({"event_timestamp": "datetime64[ns, UTC]"})


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name, logical in COLUMNS.items():
        if logical in ("float64", "int64"):
            out[name] = pd.to_numeric(out[name]).astype(logical)
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "avro"])
def test_clean_round_trip(tmp_path: Path, fmt: str) -> None:
    frame = generate(DemoSpec(rows=2000, seed=5)).frame
    path = tmp_path / f"out.{fmt}"
    write_frame(frame, path, fmt)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    back = _typed(_read(path, fmt))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    if fmt in ("csv", "jsonl"):
        first = frame["event_timestamp"].iloc[0]
        assert first.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00") in path.read_text()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "avro"])
def test_defective_round_trip(tmp_path: Path, fmt: str) -> None:
    data = generate(DemoSpec(rows=2000, seed=5, defects=ALL_DEFECTS))
    frame = data.frame
    path = tmp_path / f"out.{fmt}"
    write_frame(frame, path, fmt)  # type: ignore[arg-type]
    back = _read(path, fmt)
    assert len(back) == len(frame) and list(back.columns) == list(frame.columns)
    assert back.isna().sum().to_dict() == frame.isna().sum().to_dict()
    assert back["transaction_id"].tolist() == frame["transaction_id"].tolist()
    for name in ("amount", "distance_from_home_km"):  # wrong-type strings survive as text, numbers as numbers
        original, read = frame[name], back[name]
        assert [str(v) for v in read[original.map(_non_numeric)]] == list(original[original.map(_non_numeric)])
        numeric = original.map(lambda v: not pd.isna(v) and not _non_numeric(v))
        assert np.allclose(pd.to_numeric(read[numeric]), pd.to_numeric(original[numeric]))
    assert (back["merchant_category"].fillna("").tolist()) == frame["merchant_category"].fillna("").tolist()
    if fmt == "avro":  # unions keep each value's own type
        with path.open("rb") as fh:
            schema = fastavro.reader(fh).writer_schema
        amount = next(f for f in schema["fields"] if f["name"] == "amount")  # type: ignore[index]
        assert amount["type"] == ["null", "double", "string"]
        pd.testing.assert_series_equal(back["hour_of_day"], frame["hour_of_day"])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    frame = pd.DataFrame({"bad name": [1, 2]})
    with pytest.raises(ValueError, match="Avro"):
        write_frame(frame, tmp_path / "x.avro", "avro")
    with pytest.raises(ValueError, match="format"):
        write_frame(frame, tmp_path / "x.txt", "txt")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
