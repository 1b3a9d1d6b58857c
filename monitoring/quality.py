"""The window's data quality under the data contract the pipeline enforces.

The log holds the source's own columns for the entity keys and request features (stored features are
Feast's outputs, under no contract), so the contract's row checks on those columns run on the window as
they run at validate time: same ids (``amount.min``), same rules (:func:`kfloop.contract.row_checks`). A rule
that reads a column the log does not have (e.g. the event time) is skipped and named.
"""

from __future__ import annotations

import pyarrow as pa

from kfloop.config import Config
from kfloop.contract.checks import row_checks
from kfloop.contract.report import MAX_EXAMPLES


def window_quality(config: Config, table: pa.Table) -> dict:
    """Every applicable contract row check on ``table``: failed rows, rate and examples; the quality score
    (mean pass rate, as the validate report computes it) and the failing check ids."""
    present = [c for c in config.request_columns() if c in table.column_names]  # the source's columns
    checks, skipped = [], []
    for check in row_checks(config.contract):
        needs = [check.column] if check.column else check.columns(list(config.source.columns))
        if needs and all(c in present for c in needs):
            checks.append(check)
        else:
            skipped.append(check.check)
    rows = table.num_rows
    results = []
    for check in checks:
        mask = check.evaluate(table) if rows else None
        failed = int(mask.sum()) if mask is not None else 0
        examples = (
            table.select(check.columns(present)).filter(pa.array(mask)).slice(0, MAX_EXAMPLES).to_pylist()
            if failed
            else []
        )
        results.append(
            {
                "check": check.check,
                "severity": check.severity,
                "message": check.message,
                "passed": failed == 0,
                "failed": failed,
                "rate": failed / rows if rows else 0.0,
                "examples": examples,
            }
        )
    score = 100.0 * sum(1.0 - r["rate"] for r in results) / len(results) if results else 100.0
    return {
        "rows": rows,
        "score": round(score, 4),
        "failed_checks": [r["check"] for r in results if not r["passed"]],
        "checks": results,
        "skipped": skipped,
    }
