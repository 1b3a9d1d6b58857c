"""Per-event updates of a feature view's rolling aggregates, with the batch stage's own engine.

Why: the online value of an entity is its feature row at its newest event (what the materialize stage writes).
That row depends only on the entity's events within the view's look-back before it (the longest window plus the
longest delay before a value is known) and, for ``seconds_since_previous``, its previous event time. The worker
keeps exactly that history per entity (:class:`Windows`), merges each batch into it, and computes the newest row
with :func:`kfloop.aggregates.compute_view`, the function the batch stage uses, so window boundaries, late-known
values, nulls and ties mean the same in both. A delivery seen before (same event id) changes nothing, whatever the
order events arrive in; a second version of one event replaces the first by ``contract.duplicates.mode``, as
validate would.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter

import numpy as np
import orjson
import pyarrow as pa

from kfloop.aggregates import compute_view
from kfloop.components.features import availability, lookback, view_columns
from kfloop.components.materialize import latest_per_entity
from kfloop.config import Config, FeatureViewSpec
from kfloop.config.contract import parse_duration
from kfloop.errors import ConfigError
from kfloop.schema import arrow_schema

_US = timedelta(microseconds=1)
#: A buffered event: [event id, arrival sequence, event time (µs since the epoch), value per column].
Row = list
_TIME = itemgetter(2)
_ORDER = itemgetter(2, 1)  # histories are kept sorted by (event time, arrival)


def entity_field(value: object) -> str:
    """The key of an entity's history in the state store (JSON keeps 7 and "7" apart)."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class Update:
    """What one batch did to one view."""

    rows: pa.Table  # the newest feature row of every entity whose history changed (the online write)
    histories: dict[str, list[Row]]  # entity field → its new history, for the state store
    applied_us: np.ndarray  # event times of the events that changed a history (their lag is measured)


class Windows:
    """One view's per-entity event histories: merge, dedupe, prune and compute the newest rows."""

    def __init__(self, view: FeatureViewSpec, config: Config) -> None:
        known = availability(view, config)
        self.label_delay = parse_duration(config.features.label_delay)
        back = lookback(view, self.label_delay, known)
        if back is None:
            at = ", ".join(f"available_after.{c}.at" for c in known if not isinstance(known[c], str))
            raise ConfigError(
                f"feature view {view.name}: a value known at another column's time ({at}) may arrive any time "
                "after its event, so a stream worker cannot bound the history it keeps: leave this view to the "
                "batch stages (declare the delay as a duration to stream it)"
            )
        self.view, self.known, self.lookback_us = view, known, back // _US
        self.ts = config.source.timestamp_column
        columns = view_columns(view, config)
        self.values = [c for c in columns if c not in (view.entity, self.ts)]
        self.schema = arrow_schema(config.source)
        dups = config.contract.duplicates
        self.mode = dups.mode if dups is not None else "drop"
        self._timestamps = {c for c in self.values if pa.types.is_timestamp(self.schema.field(c).type)}

    def _encoded(self, table: pa.Table, column: str) -> list:
        col = table.column(column)
        return col.cast(pa.int64()).to_pylist() if column in self._timestamps else col.to_pylist()

    def touched(self, clean: pa.Table) -> list[str]:
        """Entity fields of the batch's events (null entities are ignored, as in batch)."""
        return sorted({entity_field(e) for e in clean.column(self.view.entity).to_pylist() if e is not None})

    def _replaces(self, old: Row, new: Row) -> bool:
        """Whether ``new`` (a later delivery of ``old``'s event id) wins under the duplicates mode."""
        if old[2:] == new[2:]:
            return False  # the same event again: at-least-once delivery
        if self.mode == "keep_last_ingested":
            return True
        if self.mode == "keep_latest":
            return new[2] >= old[2]  # newest event time; ties: the later arrival
        return False  # drop (and fail): the first one stays

    def _prune(self, rows: list[Row]) -> list[Row]:
        """Events the newest row can depend on, by (event time, arrival): within the look-back of the newest
        event, and (for ``seconds_since_previous``) the newest one before it. ``rows`` is sorted that way."""
        cutoff = rows[-1][2] - self.lookback_us
        first = bisect.bisect_right(rows, cutoff, key=_TIME)
        keep = rows[first:]
        if self.view.time_since_previous and first and (not keep or keep[0][2] == keep[-1][2]):
            keep = [rows[first - 1], *keep]  # the previous event time, for the gap
        return keep

    def apply(
        self,
        clean: pa.Table,
        ids: list[str],
        seq0: int,
        histories: dict[str, list[Row]],
        rewrite: set[str] = frozenset(),
    ) -> Update:
        """Merge the batch into ``histories`` (entity field → history sorted by event time and arrival, as loaded
        for :meth:`touched`; not modified). The rows returned are those of the entities whose history changed,
        and of ``rewrite`` (entities an earlier, conflicting attempt wrote online from an older history: their
        row is written again from this one)."""
        entities = clean.column(self.view.entity).to_pylist()
        times = clean.column(self.ts).cast(pa.int64()).to_pylist()
        columns = [self._encoded(clean, c) for c in self.values]
        added: dict[str, dict[str, Row]] = {}  # entity → event id → its row from this batch
        known: dict[str, set[str]] = {}
        applied: list[int] = []
        for i, entity in enumerate(entities):
            if entity is None or times[i] is None:
                continue
            key = entity_field(entity)
            if key not in known:
                known[key] = {r[0] for r in histories.get(key, ())}
                added[key] = {}
            new = [ids[i], seq0 + i, times[i], *(col[i] for col in columns)]
            mine = added[key]
            old = mine.get(ids[i])
            if old is None and ids[i] in known[key]:
                old = next(r for r in histories[key] if r[0] == ids[i])
            if old is None or self._replaces(old, new):
                mine[ids[i]] = new
                applied.append(times[i])
        changed = {}
        for key, rows in added.items():
            if not rows:
                continue
            history = histories.get(key, [])
            kept = [r for r in history if r[0] not in rows] if known[key] & rows.keys() else history
            changed[key] = self._prune(sorted([*kept, *rows.values()], key=_ORDER))
        again = [(k, histories[k]) for k in sorted(rewrite) if k not in changed and k in histories]
        rows = self._newest_rows([*changed.items(), *again])
        return Update(rows, changed, np.asarray(applied, dtype=np.int64))

    def _newest_rows(self, histories: Iterable[tuple[str, list[Row]]]) -> pa.Table:
        """The feature row at each entity's newest event, computed by the batch engine over its history."""
        entity_values, rows = [], []
        for key, history in histories:
            entity_values += [orjson.loads(key)] * len(history)
            rows += history
        arrays = {
            self.view.entity: pa.array(entity_values, self.schema.field(self.view.entity).type),
            self.ts: pa.array(list(map(_TIME, rows)), pa.int64()).cast(self.schema.field(self.ts).type),
        }
        for j, c in enumerate(self.values):
            kind = self.schema.field(c).type
            values = list(map(itemgetter(3 + j), rows))
            arrays[c] = pa.array(values, pa.int64()).cast(kind) if c in self._timestamps else pa.array(values, kind)
        table = pa.table(arrays)
        features = compute_view(table, self.view, self.ts, self.label_delay, None, self.known)
        return latest_per_entity(features, self.view.entity)  # sorted by event time: the last row wins
