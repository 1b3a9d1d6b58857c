"""Schema change detection: incoming columns vs the contract (``source.columns``) and vs the last
accepted source schema. New, missing, renamed-looking and retyped columns are reported by name.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from kfloop.config.contract import SchemaPolicy
from kfloop.contract.report import SchemaChange

#: Observed logical types a declared type accepts without a cast that could fail on every row.
_COMPATIBLE = {
    "int64": {"int64"},
    "float64": {"int64", "float64"},
    "bool": {"bool"},
    "timestamp": {"timestamp", "string"},
    "string": {"string", "int64", "float64", "bool", "timestamp"},
}


def _compatible(observed: str | None, declared: str) -> bool:
    return observed is None or observed in _COMPATIBLE.get(declared, {declared})


def diff_schema(
    observed: Mapping[str, str | None], declared: Mapping[str, str], policy: SchemaPolicy
) -> list[SchemaChange]:
    """Differences of ``observed`` (file columns → logical type or None) against ``declared``."""
    missing = [c for c in declared if c not in observed]
    new = [c for c in observed if c not in declared]
    changes: list[SchemaChange] = []
    for col in list(missing):
        candidates = [n for n in new if _compatible(observed[n], declared[col])]
        match = difflib.get_close_matches(col, candidates, n=1, cutoff=0.6)
        if match:
            missing.remove(col)
            new.remove(match[0])
            changes.append(
                SchemaChange(
                    "renamed",
                    col,
                    f"{col!r} is missing and {match[0]!r} is new: renamed?",
                    breaking=policy.missing_column == "error",
                )
            )
    changes += [
        SchemaChange(
            "missing", c, f"declared {declared[c]}, not in the file", breaking=policy.missing_column == "error"
        )
        for c in missing
    ]
    changes += [
        SchemaChange(
            "new",
            c,
            f"not declared in source.columns ({observed[c] or 'untyped'})",
            breaking=policy.new_column == "error",
        )
        for c in new
    ]
    for col, typ in declared.items():
        if col in observed and not _compatible(observed[col], typ):
            changes.append(
                SchemaChange(
                    "retyped",
                    col,
                    f"declared {typ}, the file has {observed[col]}",
                    breaking=policy.retyped_column == "error",
                )
            )
    return changes


def drift_from_accepted(observed: Mapping[str, str | None], accepted: Mapping[str, str | None]) -> list[SchemaChange]:
    """Non-breaking report of how the file differs from the last accepted source schema."""
    out = [
        SchemaChange("new", c, "not in the last accepted source file", breaking=False)
        for c in observed
        if c not in accepted
    ]
    out += [
        SchemaChange("missing", c, "was in the last accepted source file", breaking=False)
        for c in accepted
        if c not in observed
    ]
    out += [
        SchemaChange("retyped", c, f"was {accepted[c]}, now {observed[c]}", breaking=False)
        for c in observed
        if c in accepted and observed[c] and accepted[c] and observed[c] != accepted[c]
    ]
    return out


def describe(changes: list[SchemaChange]) -> str:
    """One line per change, breaking ones marked."""
    return "; ".join(f"{c.change} column {c.column}: {c.detail}{' [breaking]' if c.breaking else ''}" for c in changes)
