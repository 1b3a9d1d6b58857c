"""The data contract: row and table checks, duplicate handling, the quality report and its pages."""

from kfloop.contract.checks import RowCheck, check_rules_compile, row_checks
from kfloop.contract.duplicates import DuplicateIndex, DuplicateOutcome
from kfloop.contract.report import CheckResult, QualityReport, SchemaChange, report_from_json

__all__ = [
    "CheckResult",
    "DuplicateIndex",
    "DuplicateOutcome",
    "QualityReport",
    "RowCheck",
    "SchemaChange",
    "check_rules_compile",
    "report_from_json",
    "row_checks",
]
