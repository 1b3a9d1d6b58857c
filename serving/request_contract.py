"""The data contract's ``allowed`` values at serve time, for the request's own fields.

Ingest and validate quarantine a row whose ``channel`` is not one of the contract's values; a request with
such a value would otherwise be scored silently (the model maps it to "unknown"). The checks here are the
contract's own (``kfloop.contract.checks.row_checks``: same ids such as ``channel.allowed``, same values),
so one contract holds at ingest, validate and serve time. ``serving.unknown_category`` picks what happens:
``reject`` is a 400 naming the field, row and allowed values; ``flag`` scores the row and names the failed
checks in its ``violations`` output and inference-log column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kfloop.config import Config
from kfloop.contract.checks import row_checks
from kfloop.errors import RequestError
from kfloop.serving import protocol
from kfloop.serving.metrics import CONTRACT_VIOLATIONS


@dataclass(frozen=True)
class AllowedCheck:
    """One contract ``allowed`` check on a request column."""

    check: str  # the contract's id, e.g. "channel.allowed"
    column: str
    allowed: tuple  # in the contract's order (for messages)
    members: frozenset  # for membership tests (numbers as floats for a numeric column)

    def failing(self, values: np.ndarray) -> np.ndarray:
        """bool [n]: rows whose value is set and not allowed (nulls are the nullability check's business)."""
        if values.dtype != object:  # a numeric column: NaN is null
            return ~np.isnan(values) & ~np.isin(values, list(self.members))
        members = self.members
        return np.fromiter((v is not None and v not in members for v in values), bool, len(values))


def allowed_checks(config: Config, specs: Sequence[protocol.ColumnSpec]) -> tuple[AllowedCheck, ...]:
    """The contract's ``allowed`` checks on the columns a client sends."""
    kinds = {s.name: s.kind for s in specs}
    out = []
    for check in row_checks(config.contract, config.source.timezone):
        if check.kind != "allowed" or check.column not in kinds:
            continue
        values = tuple(check.rule.allowed or ())
        members = frozenset(float(v) for v in values) if kinds[check.column] == "number" else frozenset(values)
        out.append(AllowedCheck(check.check, check.column, values, members))
    return tuple(out)


def _where(proto: protocol.Protocol, column: str, row: int) -> str:
    return f"instances[{row}].{column}" if proto == "v1" else f"input {column!r}[{row}]"


class CategoryGuard:
    """Applies the allowed-values checks to a decoded request, as ``serving.unknown_category`` says."""

    def __init__(self, config: Config, specs: Sequence[protocol.ColumnSpec]) -> None:
        self.model = config.training.model_name
        self.checks = allowed_checks(config, specs)
        self.flag = config.serving.unknown_category == "flag"

    def violations(self, columns: Mapping[str, np.ndarray], n: int, proto: protocol.Protocol) -> np.ndarray | None:
        """With ``flag``: per row the failed check ids, comma-separated ("" for a clean row); None with
        ``reject``. Raises ``RequestError`` (400 / INVALID_ARGUMENT) for the first bad value with ``reject``."""
        out = np.full(n, "", dtype=object) if self.flag else None
        for check in self.checks:
            bad = check.failing(columns[check.column])
            if not bad.any():
                continue
            CONTRACT_VIOLATIONS.labels(self.model, check.check).inc(int(bad.sum()))
            if out is None:
                row = int(np.argmax(bad))
                value = columns[check.column][row]
                allowed = ", ".join(repr(v) for v in check.allowed)
                raise RequestError(
                    f"{_where(proto, check.column, row)}: {value!r} is not allowed by the data contract "
                    f"({check.check}: one of {allowed}; serving.unknown_category is 'reject')"
                )
            for i in np.flatnonzero(bad):
                out[i] = f"{out[i]},{check.check}" if out[i] else check.check
        return out
