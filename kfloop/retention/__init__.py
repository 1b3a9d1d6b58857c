"""Retention: each kind of data kept for its period of ``governance.retention``, then removed (see
:mod:`kfloop.retention.apply`)."""

from kfloop.retention.apply import Removed, RetentionResult, apply_retention, lake_datasets, result_json

__all__ = ["Removed", "RetentionResult", "apply_retention", "lake_datasets", "result_json"]
