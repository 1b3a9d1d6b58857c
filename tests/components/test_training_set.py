"""Training-set stage: point-in-time correctness on a hand-checkable fixture (TTL, label delay, no value from
after the label time), the same property on generated data, time-ordered disjoint splits, the manifest and the
feature service version. Runs on both online stores (the stage applies the repo to the configured store).
Labels: unlabeled rows are dropped and counted, values a binary task cannot use fail here, not in training."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from kfloop import lake
from kfloop.cli.summary import features_table, quality_table
from kfloop.components.training_set import _binary_labels, _labelled_rows, _task_labels, service_version
from kfloop.components.validate import validate
from kfloop.config.contract import parse_duration
from kfloop.errors import ConfigError, SourceError
from kfloop.layout import SPLITS, training_set_prefix
from kfloop.layout import latest_key as latest_key_of
from tests.feature_repo.conftest import online_backend, redis_server  # noqa: F401 (fixtures)
from tests.feature_repo.harness import (
    CUSTOMERS,
    HAND_CUSTOMER,
    HAND_CUSTOMER_ROWS,
    HAND_MERCHANT_ROWS,
    HAND_ROWS,
    HAND_TIME,
    HAND_TRAINING,
    MERCHANTS,
    NOW,
    US,
    Loop,
    OnlineBackend,
    assert_hand_assumptions,
    assert_values,
    feature_config,
    sqlite_backend,
    view_section,
    write_csv,
)


@pytest.fixture
def loop(tmp_path: Path, online_backend: OnlineBackend) -> Loop:  # noqa: F811
    return Loop.create(tmp_path / "ws", online_backend)


def all_rows(loop: Loop, result) -> pd.DataFrame:
    return pd.concat(loop.splits(result).values(), ignore_index=True)


def hand_training_rows(loop: Loop, tmp_path: Path) -> dict[str, dict]:
    """Run every stage on the hand-written CSV; the training row of each transaction."""
    loop.load(write_csv(tmp_path / "hand.csv", HAND_ROWS))
    loop.materialize()  # the online store plays no part in the point-in-time join
    rows = all_rows(loop, loop.training_set())
    assert len(rows) == len(HAND_ROWS)
    by_key = {(r["customer_id"], r["event_timestamp"]): r for r in rows.to_dict("records")}
    return {tx: by_key[(HAND_CUSTOMER[tx], HAND_TIME[tx])] for tx in HAND_TIME}


# --- point-in-time correctness ----------------------------------------------------------------------------------


def test_hand_fixture_rows_carry_exactly_the_features_as_of_just_before_their_event(loop: Loop, tmp_path: Path) -> None:
    assert_hand_assumptions(loop.config)
    rows = hand_training_rows(loop, tmp_path)
    customer_names, merchant_names = loop.spec(CUSTOMERS).feature_names(), loop.spec(MERCHANTS).feature_names()
    for tx, (customer_row, merchant_row) in HAND_TRAINING.items():
        row = rows[tx]
        assert_values(row, HAND_CUSTOMER_ROWS.get(customer_row), customer_names, f"{tx} customer features")
        assert_values(row, HAND_MERCHANT_ROWS.get(merchant_row), merchant_names, f"{tx} merchant features")
    # request-time features and the label are the row's own
    for tx, _, merchant, _, amount, fraud in HAND_ROWS:
        assert (rows[tx]["merchant_id"], rows[tx]["amount"], rows[tx]["is_fraud"]) == (merchant, amount, fraud)


def test_a_later_event_never_leaks_into_an_earlier_row(loop: Loop, tmp_path: Path) -> None:
    """A large fraudulent transaction 1 µs after tx-5 (same customer): every earlier row keeps exactly its
    features, and the new row sees tx-5 (1 µs before it) but not itself."""
    assert_hand_assumptions(loop.config)
    poisoned = [*HAND_ROWS, ("tx-9", "c-1", "m-2", "2026-01-08T09:00:00.000001", 40000.0, 1)]
    loop.load(write_csv(tmp_path / "poisoned.csv", poisoned))
    rows = all_rows(loop, loop.training_set())
    by_key = {(r["customer_id"], r["event_timestamp"]): r for r in rows.to_dict("records")}
    customer_names, merchant_names = loop.spec(CUSTOMERS).feature_names(), loop.spec(MERCHANTS).feature_names()
    for tx, (customer_row, merchant_row) in HAND_TRAINING.items():
        row = by_key[(HAND_CUSTOMER[tx], HAND_TIME[tx])]
        assert_values(row, HAND_CUSTOMER_ROWS.get(customer_row), customer_names, f"{tx} customer features")
        assert_values(row, HAND_MERCHANT_ROWS.get(merchant_row), merchant_names, f"{tx} merchant features")
    new = by_key[("c-1", HAND_TIME["tx-5"] + US)]
    assert_values(new, HAND_CUSTOMER_ROWS["tx-5"], customer_names, "tx-9 customer features")
    assert_values(new, HAND_MERCHANT_ROWS["tx-6"], merchant_names, "tx-9 merchant features")  # m-2's last row
    assert (new["amount"], new["is_fraud"]) == (40000.0, 1)  # its own values only as request features / label
    assert max(rows["amount_sum_7d"].dropna()) < 40000  # the poisoned amount is in no row's features


def test_ttl_decides_whether_an_old_customer_row_is_joined(loop: Loop, tmp_path: Path) -> None:
    """tx-8's customer row (tx-7) is 37d 22h old: null with ttl 30d (see above), joined with ttl 40d."""
    assert_hand_assumptions(loop.config)
    loop.reconfigure(lambda d: view_section(d, CUSTOMERS).update(ttl="40d"))
    rows = hand_training_rows(loop, tmp_path)
    names = loop.spec(CUSTOMERS).feature_names()
    assert_values(rows["tx-8"], HAND_CUSTOMER_ROWS["tx-7"], names, "tx-8 customer features with ttl 40d")
    assert_values(rows["tx-7"], HAND_CUSTOMER_ROWS["tx-6"], names, "tx-7 customer features with ttl 40d")
    assert_values(rows["tx-6"], None, names, "tx-6 (c-2's first transaction)")


def test_generated_rows_equal_an_independent_as_of_join(loop: Loop) -> None:
    """Every training row (1500 generated transactions) carries, per view, the entity's newest offline row
    strictly before the row's event time and within the view's ttl (pandas merge_asof), value for value."""
    frame = loop.load_demo()
    rows = all_rows(loop, loop.training_set())
    assert len(rows) == len(frame)
    rows["_asof"] = rows["event_timestamp"].astype("datetime64[us, UTC]") - US
    rows["_row"] = np.arange(len(rows))
    joined_any = 0
    for view in loop.config.features.views:
        offline = loop.offline(view.name).rename(columns={"event_timestamp": "_feature_time"})
        offline["_feature_time"] = offline["_feature_time"].astype("datetime64[us, UTC]")
        want = (
            pd.merge_asof(
                rows[["_row", view.entity, "_asof"]].sort_values("_asof"),
                offline.sort_values("_feature_time"),
                left_on="_asof",
                right_on="_feature_time",
                by=view.entity,
                direction="backward",
                tolerance=pd.Timedelta(parse_duration(view.ttl)),
            )
            .set_index("_row")
            .sort_index()
        )
        joined = want["_feature_time"].notna()
        assert (want.loc[joined, "_feature_time"] < rows.loc[joined, "event_timestamp"]).all()
        joined_any += int(joined.sum())
        for name in view.feature_names():
            np.testing.assert_array_equal(rows[name].to_numpy(float), want[name].to_numpy(float), err_msg=name)
    assert joined_any > len(rows)  # most rows find features in both views: the comparison is not vacuous


# --- splits and manifest ------------------------------------------------------------------------------------------


def test_splits_are_time_ordered_disjoint_and_complete(loop: Loop) -> None:
    frame = loop.load_demo()
    result = loop.training_set()
    splits = loop.splits(result)
    n = len(loop.clean())
    assert sum(len(s) for s in splits.values()) == n == len(frame)
    assert {k: len(v) for k, v in splits.items()} == result.rows
    assert [len(splits["train"]), len(splits["validation"])] == [int(n * 0.7), int(n * 0.15)]
    times = [splits[s]["event_timestamp"] for s in SPLITS]
    assert times[0].max() <= times[1].min() and times[1].max() <= times[2].min()
    keys = [set(zip(s["customer_id"], s["merchant_id"], s["event_timestamp"], strict=True)) for s in splits.values()]
    assert sum(len(k) for k in keys) == n and len(set().union(*keys)) == n  # no row twice, none lost
    for name in SPLITS:
        assert result.time_range[name] == [
            times[SPLITS.index(name)].min().isoformat(),
            times[SPLITS.index(name)].max().isoformat(),
        ]
    expected_columns = [
        "customer_id", "merchant_id", "event_timestamp", *loop.config.features.request_features,
        *loop.config.features.feature_names(), "is_fraud",
    ]  # fmt: skip
    assert all(list(s.columns) == expected_columns for s in splits.values())


def test_manifest_records_service_version_and_content_hash(loop: Loop) -> None:
    loop.load_demo("early")
    result = loop.training_set()
    manifest = loop.manifest(result)
    assert manifest["feature_service"] == loop.config.features.service == "fraud_features"
    assert manifest["feature_service_version"] == service_version(loop.config) == result.feature_service_version
    digest = hashlib.sha256()
    for name in SPLITS:
        digest.update(Path(f"{result.prefix}/{name}.parquet").read_bytes())
    assert manifest["content_hash"] == digest.hexdigest() == result.content_hash
    assert manifest["features"] == loop.config.features.feature_names()
    assert manifest["rows"] == result.rows and manifest["label"] == "is_fraud"
    latest_key = latest_key_of(training_set_prefix(loop.config.features.service))
    latest = json.loads((loop.workspace / latest_key).read_text())
    assert latest == manifest
    # the Feast feature service the join went through serves exactly the configured views
    service = loop.store().get_feature_service("fraud_features")
    assert [p.name for p in service.feature_view_projections] == [CUSTOMERS, MERCHANTS]


def test_feature_service_version_changes_with_a_view_definition(loop: Loop) -> None:
    loop.load_demo("early")
    first = loop.training_set()
    unrelated = feature_config(loop.workspace, loop.backend, lambda d: d["features"].update(splits=[0.8, 0.1, 0.1]))
    assert service_version(unrelated) == first.feature_service_version  # not a feature definition
    for edit in (
        lambda d: view_section(d, CUSTOMERS)["aggregates"][0]["windows"].append("2h"),
        lambda d: view_section(d, MERCHANTS).update(ttl="90d"),
        lambda d: d["features"].update(label_delay="3d"),
    ):
        assert service_version(feature_config(loop.workspace, loop.backend, edit)) != first.feature_service_version
    loop.reconfigure(lambda d: view_section(d, CUSTOMERS)["aggregates"][0]["windows"].append("2h"))
    loop.features()
    second = loop.training_set()
    assert second.feature_service_version != first.feature_service_version
    assert loop.manifest(second)["feature_service_version"] == second.feature_service_version
    assert "amount_sum_2h" in all_rows(loop, second).columns and "amount_sum_2h" not in all_rows(loop, first).columns
    assert second.prefix != first.prefix and Path(f"{first.prefix}/manifest.json").exists()  # earlier set kept


# --- labels -------------------------------------------------------------------------------------------------------


def label_edit(column_type: str = "int64") -> Callable[[dict], None]:
    """A label column the contract lets through unchecked (nullable, any value), of ``column_type``: what
    reaches the training-set step is then up to the source."""

    def edit(d: dict) -> None:
        d["source"]["columns"]["is_fraud"] = column_type
        del d["contract"]["columns"]["is_fraud"]
        d["contract"]["completeness"]["columns"] = ["customer_id", "merchant_id", "event_timestamp"]
        merchants = view_section(d, MERCHANTS)  # the label's mean is a feature: not over strings
        merchants["aggregates"] = [a for a in merchants["aggregates"] if a["column"] != "is_fraud"]

    return edit


def hand_rows_with_labels(labels: dict[str, object]) -> list[tuple]:
    return [(*row[:5], labels.get(row[0], row[5])) for row in HAND_ROWS]


def test_unlabeled_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), label_edit())
    unlabeled = {"tx-3": "", "tx-7": ""}  # empty CSV cells: null labels
    loop.load(write_csv(tmp_path / "late.csv", hand_rows_with_labels(unlabeled)))
    assert loop.clean()["is_fraud"].isna().sum() == 2  # the contract let them through
    result = loop.training_set()
    assert result.unlabeled_rows_dropped == 2
    rows = all_rows(loop, result)
    assert sum(result.rows.values()) == len(rows) == len(HAND_ROWS) - 2
    present = {tx for tx, when in HAND_TIME.items() if (rows["event_timestamp"] == when).any()}
    assert present == set(HAND_TIME) - set(unlabeled)
    assert rows["is_fraud"].dtype == "int64" and set(rows["is_fraud"]) == {0, 1}
    assert loop.manifest(result)["unlabeled_rows_dropped"] == 2
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(features_table([], [], loop.manifest(result)))  # the run summary `kfloop run` prints
    assert "2 unlabeled rows dropped" in console.export_text()


def test_training_window_keeps_the_newest_labelled_events_with_features_from_all_history(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), lambda d: d["features"].update(training_window="40d"))
    loop.load(write_csv(tmp_path / "hand.csv", HAND_ROWS))
    result = loop.training_set()
    newest = max(HAND_TIME.values())
    inside = {tx for tx, when in HAND_TIME.items() if when > newest - pd.Timedelta(days=40)}
    assert inside == {"tx-5", "tx-7", "tx-8"}
    rows = all_rows(loop, result)
    assert set(rows["event_timestamp"]) == {HAND_TIME[tx] for tx in inside}
    assert result.rows_before_window == len(HAND_ROWS) - len(inside)
    assert loop.manifest(result)["rows_before_window"] == len(HAND_ROWS) - len(inside)
    tx7 = rows[rows["event_timestamp"] == HAND_TIME["tx-7"]].iloc[0]
    assert tx7["amount_count_7d"] == 1  # tx-6 (2026-01-02, outside the window) still counts in its aggregate
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(features_table([], [], loop.manifest(result)))
    assert "5 older rows outside features.training_window" in console.export_text()


@pytest.mark.parametrize(
    ("column_type", "labels", "shown"),
    [
        (
            "int64",
            {"tx-2": 2, "tx-4": 2, "tx-6": 3},
            "3 value(s) a binary task cannot use (it needs 0/1 or true/false), e.g. 2, 3",
        ),
        (
            "float64",
            {"tx-2": 0.5, "tx-8": ""},
            "1 value(s) a binary task cannot use (it needs 0/1 or true/false), e.g. 0.5",
        ),
    ],
    ids=["int", "float"],
)
def test_unusable_label_values_fail_at_validate_and_in_the_training_set_step_naming_the_column(
    tmp_path: Path, column_type: str, labels: dict[str, object], shown: str
) -> None:
    """A binary task's label is checked at validate time (the gate fails, pointing at a regression task), and
    the training-set step keeps its own guard for rows that reached it unchecked."""
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), label_edit(column_type))
    loop.ingest(write_csv(tmp_path / "bad.csv", hand_rows_with_labels(labels)))
    report = validate(loop.config, loop.storage, now=NOW).report
    failed = [c for c in report.checks if not c.passed]
    assert not report.gate_passed and [c.check for c in failed] == ["label.binary"]
    assert failed[0].column == "is_fraud" and "training.task regression" in failed[0].message
    raw = lake.read_manifest(loop.storage, loop.config.source.dataset)
    with pytest.raises(SourceError, match=r"label column 'is_fraud' of 'transactions' has ") as err:
        _binary_labels(_labelled_rows(loop.storage, raw, loop.config), "is_fraud", "transactions")
    assert shown in str(err.value)
    assert not (loop.workspace / training_set_prefix(loop.config.features.service)).exists()  # nothing written


def test_a_string_label_fails_at_config_load_and_in_the_training_set_step() -> None:
    """Strings are not binary labels, not even "0" and "1": the config says so when it loads, and the
    training-set step's own guard names the values and the fix."""
    with pytest.raises(ConfigError, match=r"'is_fraud' is string; training.task binary needs a 0/1 label"):
        Loop.create(Path("/nonexistent"), sqlite_backend(), label_edit("string"))
    frame = pd.DataFrame({"is_fraud": ["1", "yes", "0", "no", None]})
    with pytest.raises(SourceError, match=r"label column 'is_fraud' of 'transactions' has 4 value\(s\)") as err:
        _binary_labels(frame, "is_fraud", "transactions")
    assert "e.g. '1', 'yes', '0', 'no': declare it int64 or bool in source.columns" in str(err.value)


def test_booleans_are_labels_too(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), label_edit("bool"))
    labels = {tx: ("true" if fraud else "false") for tx, *_, fraud in HAND_ROWS} | {"tx-8": ""}
    loop.load(write_csv(tmp_path / "bool.csv", hand_rows_with_labels(labels)))
    result = loop.training_set()
    rows = all_rows(loop, result)
    assert result.unlabeled_rows_dropped == 1 and rows["is_fraud"].dtype == "int64"
    assert sorted(rows["is_fraud"]) == sorted(f for tx, *_, f in HAND_ROWS if tx != "tx-8")


def test_a_dataset_without_any_label_says_so(tmp_path: Path) -> None:
    loop = Loop.create(tmp_path / "ws", sqlite_backend(), label_edit())
    loop.load(write_csv(tmp_path / "none.csv", hand_rows_with_labels({tx: "" for tx in HAND_TIME})))
    with pytest.raises(SourceError, match=r"label column 'is_fraud' is empty in all 8 rows of 'transactions'"):
        loop.training_set()


def test_unlabeled_rows_pass_the_shipped_contract_feed_the_features_and_stay_out_of_training(tmp_path: Path) -> None:
    """The demo contract as shipped: a null label is no contract failure (labels arrive late). Such rows stay in the
    clean data and the feature history; the training set leaves them out and says how many, down to the summary
    `kfloop run` prints. A `nullable: false` the user writes on the label is honoured as written."""
    loop = Loop.create(tmp_path / "ws", sqlite_backend())
    unlabeled = {"tx-3": "", "tx-7": ""}  # m-1 rows outside any label window the hand values read: they still hold
    loop.ingest(write_csv(tmp_path / "late.csv", hand_rows_with_labels(unlabeled)))
    report = loop.validate().report  # the gate passes
    assert (report.rows_quarantined, report.rows_clean) == (0, len(HAND_ROWS))
    completeness = next(c for c in report.checks if c.check == "table.completeness")
    assert completeness.passed and completeness.failed == 0 and "is_fraud" not in completeness.message
    assert loop.clean()["is_fraud"].isna().sum() == 2
    loop.features()
    for view, expected in ((CUSTOMERS, HAND_CUSTOMER_ROWS), (MERCHANTS, HAND_MERCHANT_ROWS)):
        spec = loop.spec(view)  # every row computed as with labels: tx-4's 7d count of 4 includes tx-3
        by_key = {(r[spec.entity], r["event_timestamp"]): r for r in loop.offline(view).to_dict("records")}
        for tx, customer, merchant, *_ in HAND_ROWS:
            row = by_key[(customer if view == CUSTOMERS else merchant, HAND_TIME[tx])]
            assert_values(row, expected[tx], spec.feature_names(), f"{view} row of {tx}")
    result = loop.training_set()
    rows = all_rows(loop, result)
    assert result.unlabeled_rows_dropped == 2 and len(rows) == len(HAND_ROWS) - 2
    assert rows["is_fraud"].dtype == "int64" and set(rows["is_fraud"]) == {0, 1}
    tx4 = rows[rows["event_timestamp"] == HAND_TIME["tx-4"]].iloc[0].to_dict()
    names = loop.spec(CUSTOMERS).feature_names()
    assert_values(tx4, HAND_CUSTOMER_ROWS["tx-3"], names, "tx-4 reads the state after the unlabeled tx-3")
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(quality_table(report.to_dict()))
    console.print(features_table([], [], loop.manifest(result)))
    text = console.export_text()
    assert "2 unlabeled rows dropped" in text and "completeness" not in text and "is_fraud" not in text

    loop.reconfigure(lambda d: d["contract"]["columns"]["is_fraud"].update(nullable=False))
    strict = validate(loop.config, loop.storage, now=NOW).report
    assert [c.check for c in strict.failed_errors] == ["is_fraud.nullable"]


def test_a_regression_or_multiclass_label_keeps_its_values_and_unlabeled_rows_are_counted_out() -> None:
    """Only a binary label must be 0/1: a delay in minutes (regression) or a class name keeps its values, and the
    rows without one (a cancelled flight's delay) are dropped and counted as for any task."""
    frame = pd.DataFrame({"delay": [12.5, None, -3.0, 240.0, None], "k": list("abcde")})
    kept, unlabeled = _task_labels(frame, "delay", "flights", "regression")
    assert unlabeled == 2 and kept["delay"].tolist() == [12.5, -3.0, 240.0] and kept["k"].tolist() == list("acd")
    classes = frame.assign(delay=["on_time", None, "late", "late", None])
    kept, unlabeled = _task_labels(classes, "delay", "flights", "multiclass")
    assert unlabeled == 2 and kept["delay"].tolist() == ["on_time", "late", "late"]
    with pytest.raises(SourceError, match=r"label column 'delay' is empty in all 2 rows of 'flights'"):
        _task_labels(frame.iloc[[1, 4]], "delay", "flights", "regression")
    with pytest.raises(SourceError, match=r"a binary task cannot use"):
        _task_labels(frame, "delay", "flights", "binary")
