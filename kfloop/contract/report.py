"""The quality report: every check's outcome, the score, the gate decision. JSON for machines.

Quality score (0-100 %): the mean, over every check that ran, of its pass rate - for a row-level
check ``1 - failed_rows / rows_in``, for a table-level check (completeness, minimum rows, freshness,
schema) 1 if it passed else 0. Clean data that meets the whole contract scores 100.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warn", "quarantine"]
Level = Literal["row", "table"]

#: How many example rows a check keeps for the report.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome."""

    check: str  # stable id: "amount.min", "rule.refund_le_amount", "table.completeness", "schema.missing"
    kind: str  # nullable|min|max|allowed|regex|max_length|rule|completeness|min_rows|freshness|duplicates|schema
    level: Level
    severity: Severity
    passed: bool
    failed: int  # offending rows (row level) or 0/1 (table level)
    total: int  # rows checked (row level) or 1
    message: str  # what was expected, what was found
    column: str | None = None
    examples: list[dict] = field(default_factory=list)  # up to MAX_EXAMPLES offending rows/values

    @property
    def rate(self) -> float:
        """Failure rate (0 when nothing was checked)."""
        return self.failed / self.total if self.total else 0.0

    @property
    def pass_rate(self) -> float:
        if self.level == "table":
            return 1.0 if self.passed else 0.0
        return 1.0 - self.rate


@dataclass(frozen=True)
class SchemaChange:
    """A difference between incoming data and the contract or last accepted schema."""

    change: Literal["new", "missing", "retyped", "renamed"]
    column: str
    detail: str
    breaking: bool


@dataclass
class QualityReport:
    """Everything the validate stage found, for one run over one dataset."""

    dataset: str
    run_id: str
    created: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rows_dropped_duplicates: int
    checks: list[CheckResult]
    schema_changes: list[SchemaChange] = field(default_factory=list)

    @property
    def quality_score(self) -> float:
        """Mean pass rate over all checks, in percent (see module docstring)."""
        if not self.checks:
            return 100.0
        # floored, not rounded: a report with a failing check never shows 100.00
        return math.floor(10_000.0 * sum(c.pass_rate for c in self.checks) / len(self.checks)) / 100

    @property
    def failed_errors(self) -> list[CheckResult]:
        """Checks of severity ``error`` that failed: any one stops the pipeline."""
        return [c for c in self.checks if c.severity == "error" and not c.passed]

    @property
    def gate_passed(self) -> bool:
        return not self.failed_errors

    def metric(self, kind: str) -> float:
        """Pass rate of a table-level measure (completeness ratio, duplicate rate) from its check."""
        for c in self.checks:
            if c.kind == kind:
                return c.rate
        return 0.0

    def gate_message(self) -> str:
        """One line per failed error check: name, failing count, examples."""
        lines = []
        for c in self.failed_errors:
            ex = f"; e.g. {json.dumps(c.examples[:3], default=str)}" if c.examples else ""
            lines.append(f"{c.check}: {c.message} ({c.failed:,} of {c.total:,} failing){ex}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        body = asdict(self)
        body["checks"] = [{**asdict(c), "rate": c.rate} for c in self.checks]
        body.update(quality_score=self.quality_score, gate_passed=self.gate_passed)
        return body

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def report_from_json(text: str) -> QualityReport:
    """Inverse of :meth:`QualityReport.to_json` (derived fields are recomputed, not read)."""
    d = json.loads(text)
    fields = {f for f in CheckResult.__dataclass_fields__}
    checks = [CheckResult(**{k: v for k, v in c.items() if k in fields}) for c in d["checks"]]
    changes = [SchemaChange(**c) for c in d.get("schema_changes", [])]
    keep = {
        k: d[k]
        for k in (
            "dataset",
            "run_id",
            "created",
            "rows_in",
            "rows_clean",
            "rows_quarantined",
            "rows_dropped_duplicates",
        )
    }
    return QualityReport(**keep, checks=checks, schema_changes=changes)
