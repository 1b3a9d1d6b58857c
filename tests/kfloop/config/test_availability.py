"""``source.available_after``: both forms load and survive the pipeline's JSON hand-off; a column derived from a
late one is late unless declared; the label may be late; old configs (``label_delay``) mean what they meant."""

from __future__ import annotations

from datetime import timedelta

from kfloop.config import config_from_json, config_to_json, parse_config
from kfloop.config.availability import KnownAt, known_after, late_derived

BASE = {
    "project": "demo",
    "source": {
        "uri": "data.csv",
        "entity_keys": ["customer_id"],
        "timestamp_column": "ts",
        "label_column": "late",
        "columns": {"customer_id": "string", "ts": "timestamp", "done": "timestamp", "duration": "float64"},
        "derived": {"late": {"expression": "duration > 30", "type": "int64"}},
        "available_after": {"duration": {"at": "done"}, "late": "1d"},
    },
    "features": {
        "views": [
            {
                "name": "activity",
                "entity": "customer_id",
                "aggregates": [
                    {"column": "duration", "functions": ["mean"], "windows": ["7d"]},
                    {"column": "late", "functions": ["mean"], "windows": ["7d"]},
                ],
            }
        ]
    },
}


def test_both_forms_load_and_round_trip_through_json() -> None:
    config = parse_config(BASE, "test")
    assert config.source.available_after == {"duration": KnownAt(at="done"), "late": "1d"}
    assert config_from_json(config_to_json(config)) == config
    assert late_derived(config.source) == {}  # the derived label is declared itself


def test_a_derived_column_is_late_when_an_input_is() -> None:
    data = {**BASE, "source": {**BASE["source"], "available_after": {"duration": "2h"}}}
    config = parse_config({**data, "features": {}}, "test")
    assert late_derived(config.source) == {"late": "duration"}


def test_label_delay_is_the_labels_delay_and_nothing_else_is_late() -> None:
    declared = {"duration": KnownAt(at="done"), "late": "1d"}
    week = timedelta(days=7)
    assert known_after("is_fraud", True, week, {}) == week  # the old form
    assert known_after("amount", False, week, declared) is None  # undeclared: known at the event
    assert known_after("duration", False, week, declared) == "done"
    assert known_after("late", False, week, declared) == timedelta(days=1)
