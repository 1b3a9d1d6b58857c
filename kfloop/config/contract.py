"""The ``contract`` section: the data-quality contract the validate stage enforces.

Column types come from ``source.columns`` (one source of truth); the contract adds the rules.
Severity per check: ``error`` fails the gate, ``warn`` only reports, ``quarantine`` moves the
offending rows aside (with a reason per failed check) and lets the rest through.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kfloop.config._base import Section

Severity = Literal["error", "warn", "quarantine"]
#: Table-level checks judge the whole dataset: there is no row to quarantine.
TableSeverity = Literal["error", "warn"]
DuplicateMode = Literal["drop", "keep_latest", "keep_last_ingested", "fail"]
SchemaAction = Literal["error", "warn"]

DURATION_PATTERN = r"^(\d+)([smhd])$"  # the one duration grammar of the config: windows, TTLs, max ages
_DURATION = re.compile(DURATION_PATTERN)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``"15m"``, ``"24h"``, ``"7d"`` → timedelta."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


class ColumnRule(Section):
    """Checks on one column; each is skipped when unset."""

    nullable: bool = Field(True, description="false: a null value fails the check.")
    min: float | None = Field(None, description="Smallest allowed value (inclusive; numeric columns).")
    max: float | None = Field(None, description="Largest allowed value (inclusive; numeric columns).")
    allowed: tuple[str, ...] | None = Field(None, min_length=1, description="Allowed values (categoricals).")
    regex: str | None = Field(None, description="Full-match pattern for strings.")
    max_length: int | None = Field(None, ge=1, description="Longest allowed string, in characters.")
    severity: Severity = Field("quarantine", description="What a failing row does: error, warn or quarantine.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"invalid regex: {err}") from err
            import pyarrow as pa
            import pyarrow.compute as pc

            try:  # checks run on Arrow's RE2 engine, which lacks look-arounds and back-references
                pc.match_substring_regex(pa.array([""], pa.string()), f"^(?:{value})$")
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(f"regex not supported by RE2 (no look-arounds or back-references): {err}") from err
        return value

    @model_validator(mode="after")
    def _range(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RowRule(Section):
    """A business rule as a row expression over columns, e.g. ``amount >= 0``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Check id in reports and quarantine reasons.")
    expr: str = Field(
        min_length=1,
        description="True/false expression, true for good rows, in the typed language of source.derived (also "
        "x in [a, b], abs(x), ts.dt.hour as hour(ts)); checked against the columns when the config loads.",
    )
    severity: Severity = Field("quarantine", description="What a failing row does: error, warn or quarantine.")


class Completeness(Section):
    """Share of records with every required column present."""

    min_ratio: float = Field(0.95, ge=0, le=1, description="Smallest share of rows with every required column present.")
    columns: tuple[str, ...] | None = Field(
        None, description="Required columns; default: entity keys and event time (not the label)."
    )
    severity: TableSeverity = Field("error", description="error fails the gate; warn only reports.")


class MinRows(Section):
    value: int = Field(1, ge=0, description="Clean rows needed (after quarantine and duplicates).")
    severity: TableSeverity = Field("error", description="error fails the gate; warn only reports.")


class Freshness(Section):
    """The newest event must be no older than ``max_age`` at validation time."""

    max_age: str = Field("7d", description="A duration: a number and s, m, h or d (90s, 15m, 24h, 7d).")
    severity: TableSeverity = Field("warn", description="error fails the gate; warn only reports.")

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class Duplicates(Section):
    """Exact duplicates and key duplicates (same key, different values)."""

    keys: tuple[str, ...] = Field(min_length=1, description="Columns that identify a record.")
    mode: DuplicateMode = Field(
        "keep_latest",
        description="drop keeps the first row per key, keep_latest the newest by event time (ties: the last "
        "ingested), keep_last_ingested the last ingested whatever its event time (upserts); fail fails the gate.",
    )


class SchemaPolicy(Section):
    """What a schema change against the contract / last accepted schema does."""

    new_column: SchemaAction = Field("warn", description="A column the contract does not know.")
    missing_column: SchemaAction = Field("error", description="A declared column absent from the source.")
    retyped_column: SchemaAction = Field("error", description="A column whose type changed (typed formats).")


class ContractConfig(Section):
    """The data contract; an empty contract checks only the schema and the default completeness."""

    columns: dict[str, ColumnRule] = Field(default_factory=dict, description="Checks per column of source.columns.")
    rules: tuple[RowRule, ...] = Field((), description="Business rules as row expressions.")
    completeness: Completeness = Field(Completeness(), description="Share of rows with the required columns.")
    min_rows: MinRows = Field(MinRows(), description="Clean rows needed for training.")
    freshness: Freshness | None = Field(None, description="Age limit of the newest event; null: not checked.")
    duplicates: Duplicates | None = Field(None, description="Duplicate handling by key; null: not checked.")
    schema_changes: SchemaPolicy = Field(SchemaPolicy(), description="What each kind of schema change does.")
