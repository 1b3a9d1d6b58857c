"""Row-level contract checks, vectorized with pyarrow compute on one batch at a time.

Each check returns a boolean numpy mask of offending rows; the caller accumulates counts and examples
across batches, so memory stays bounded by the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfloop.column_types import ColumnType
from kfloop.config.contract import ColumnRule, ContractConfig, RowRule
from kfloop.errors import ConfigError, ExpressionError
from kfloop.expressions import evaluate, infer, names
from kfloop.schema import ARROW_TYPES


@dataclass(frozen=True)
class RowCheck:
    """A row-level check: id, what it tests, and how to evaluate it on a batch."""

    check: str
    kind: str
    column: str | None
    severity: str
    message: str
    rule: ColumnRule | RowRule
    zone: str | None = None  # the source's time zone: hour(...) in a rule reads local time, as derived columns do

    def columns(self, available: list[str]) -> list[str]:
        """The columns this check reads (shown in examples)."""
        if isinstance(self.rule, RowRule):
            return [c for c in names(self.rule.expr) if c in available]
        return [self.column] if self.column else []

    def evaluate(self, table: pa.Table) -> np.ndarray:
        """Mask of rows that fail this check (nulls fail only the nullability check)."""
        if isinstance(self.rule, RowRule):
            return _rule_failures(self.rule, table, self.zone)
        col = table.column(self.column)
        if self.kind == "nullable":
            return np.asarray(col.is_null()) if col.null_count else np.zeros(len(col), dtype=bool)
        bad = self._offending(col)
        if col.null_count:  # a null fails only nullability (Arrow's kernels give null there: filled below)
            bad = pc.and_(bad, pc.is_valid(col))
        if bad.null_count:
            bad = pc.fill_null(bad, False)
        return np.asarray(bad, dtype=bool)

    def _offending(self, col: pa.ChunkedArray) -> pa.ChunkedArray:
        """The kernel of this column check (min, max, allowed, regex, max_length) on ``col``."""
        r = self.rule
        assert isinstance(r, ColumnRule)
        if self.kind in ("min", "max"):
            num = col if col.type == pa.float64() else pc.cast(col, pa.float64())
            return pc.less(num, r.min) if self.kind == "min" else pc.greater(num, r.max)
        if self.kind == "allowed":
            return pc.invert(pc.is_in(col, value_set=pa.array(r.allowed, col.type)))
        if self.kind == "regex":
            return pc.invert(pc.match_substring_regex(col, f"^(?:{r.regex})$"))
        # max_length: a string has at most as many characters as bytes, so characters are counted only when
        # some value is longer than the limit in bytes
        too_long = pc.greater(pc.binary_length(col), r.max_length)
        return pc.greater(pc.utf8_length(col), r.max_length) if pc.any(too_long).as_py() else too_long


#: Lake Arrow type → column type (built once: hashing Arrow types per batch and rule adds up).
_BY_ARROW = {arrow: kind for kind, arrow in ARROW_TYPES.items()}


def _types(schema: pa.Schema) -> dict[str, ColumnType]:
    return {f.name: _BY_ARROW[f.type] for f in schema if f.type in _BY_ARROW}


def _rule_failures(rule: RowRule, table: pa.Table, zone: str | None) -> np.ndarray:
    """Rows where the expression is false; rows missing a referenced value are left to nullability."""
    cols = names(rule.expr)
    part = table.select(cols)
    result, failed = evaluate(rule.expr, part, _types(part.schema), zone)
    bad = np.asarray(pc.fill_null(pc.invert(result), False), dtype=bool)
    for mask, _, _ in failed.parts:  # a value the rule could not compute (e.g. an unparsable timestamp text)
        bad |= mask
    if cols:
        missing = np.zeros(part.num_rows, dtype=bool)
        for c in cols:
            if part.column(c).null_count:
                missing |= np.asarray(pc.is_null(part.column(c)), dtype=bool)
        bad &= ~missing
    return bad


def check_rules_compile(contract: ContractConfig, schema: pa.Schema) -> None:
    """Fail early, naming the rule, when an expression does not parse, names an unknown column, mixes types
    or is not a true/false per row: rules share the safe, typed language of ``source.derived``."""
    types = _types(schema)
    for i, rule in enumerate(contract.rules):
        try:
            kind = infer(rule.expr, types)
        except ExpressionError as err:
            raise ConfigError(f"contract.rules.{i} ({rule.name}): cannot evaluate {rule.expr!r}: {err}") from err
        if kind is not ColumnType.BOOL:
            raise ConfigError(
                f"contract.rules.{i} ({rule.name}): {rule.expr!r} gives {kind.value}, not true/false per row"
            )


def _allowed(values: tuple[str, ...]) -> str:
    shown = ", ".join(repr(v) for v in values[:4])
    return f"one of {shown}" + (f" … ({len(values)} allowed values)" if len(values) > 4 else "")


def _describe(kind: str, rule: ColumnRule) -> str:
    return {
        "nullable": "no missing values",
        "min": f">= {rule.min}",
        "max": f"<= {rule.max}",
        "allowed": _allowed(rule.allowed or ()),
        "regex": f"matches /{rule.regex}/",
        "max_length": f"at most {rule.max_length} characters",
    }[kind]


def row_checks(contract: ContractConfig, zone: str | None = None) -> list[RowCheck]:
    """Every row-level check the contract declares, with stable ids like ``amount.min``; ``zone`` is the
    source's time zone (what ``hour(event_timestamp)`` in a rule reads)."""
    checks: list[RowCheck] = []
    for name, rule in contract.columns.items():
        kinds = [
            ("nullable", not rule.nullable),
            ("min", rule.min is not None),
            ("max", rule.max is not None),
            ("allowed", rule.allowed is not None),
            ("regex", rule.regex is not None),
            ("max_length", rule.max_length is not None),
        ]
        for kind, on in kinds:
            if on:
                checks.append(
                    RowCheck(f"{name}.{kind}", kind, name, rule.severity, f"{name} {_describe(kind, rule)}", rule)
                )
    for rule in contract.rules:
        checks.append(RowCheck(f"rule.{rule.name}", "rule", None, rule.severity, f"rule {rule.expr!r}", rule, zone))
    return checks


def label_checks(label: str | None, task: str, integer: bool, contract: ContractConfig) -> list[RowCheck]:
    """The check ``training.task`` implies on the label: a binary label is 0 or 1 (nulls are left to
    nullability: unlabeled rows stay in the feature history). It fails the gate (severity error), so a
    numeric outcome meant for regression is named here rather than in the trainer. Left out when the
    contract already says so (an integer label with min >= 0 and max <= 1)."""
    if label is None or task != "binary":
        return []
    rule = contract.columns.get(label)
    bounded = rule is not None and rule.min is not None and rule.max is not None and rule.min >= 0 and rule.max <= 1
    if integer and bounded:
        return []
    implied = RowRule(name="label_binary", expr=f"{label} in [0, 1]", severity="error")
    message = f"{label} is 0 or 1 (training.task binary; a numeric outcome needs training.task regression)"
    return [RowCheck("label.binary", "rule", label, "error", message, implied)]
