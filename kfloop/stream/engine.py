"""Per-event updates of a feature view's rolling aggregates, with the batch stage's semantics.

Why: the online value of an entity is its feature row at its newest event (what the materialize stage writes).
That row depends only on the entity's events within the view's look-back before it (the longest window plus the
longest delay before a value is known) and, for ``seconds_since_previous``, its previous event time. The worker
keeps exactly that history per entity, with running window aggregates over it
(:class:`kfloop.stream.running.EntityWindows`), so an in-order event costs O(1) whatever the window's length;
an event older than the entity's newest, or a second version of one, rebuilds that entity from its history. A
delivery seen before (same event id) changes nothing, whatever the order events arrive in; a second version of
one event replaces the first by ``contract.duplicates.mode``, as validate would. The batch engine
(:func:`kfloop.aggregates.compute_view`) is the reference the tests hold this to.

Each view keeps its entities' state in memory under the version the state store last saw (see
:mod:`kfloop.stream.state`): a batch loads only entities another worker changed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter

import numpy as np
import orjson
import pyarrow as pa

from kfloop.aggregates import TIMESTAMP_TYPE
from kfloop.components.features import availability, lookback, view_columns
from kfloop.config import Config, FeatureViewSpec
from kfloop.config.contract import parse_duration
from kfloop.config.features import FEATURE_TIMESTAMP
from kfloop.errors import ConfigError
from kfloop.schema import arrow_schema
from kfloop.stream.running import EntityWindows, Row, ViewPlan

__all__ = ["Change", "Row", "Update", "Windows", "entity_field"]

_US = timedelta(microseconds=1)
_ORDER = itemgetter(2, 1)  # histories are kept sorted by (event time, arrival)
#: Entities whose state a worker keeps in memory per view (least recently used dropped first).
CACHE_ENTITIES = 200_000


def entity_field(value: object) -> str:
    """The key of an entity's history in the state store (JSON keeps 7 and "7" apart)."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class Change:
    """How one entity's stored history changes: rows appended and as many trimmed from its front, or (a late
    event, a replaced one) the whole history rewritten."""

    append: list[Row]
    trim: int = 0
    replace: list[Row] | None = None


@dataclass(frozen=True)
class Update:
    """What one batch did to one view."""

    rows: pa.Table  # the newest feature row of every entity whose history changed (the online write)
    changes: dict[str, Change]  # entity field → how its stored history changes
    applied_us: np.ndarray  # event times of the events that changed a history (their lag is measured)


class Windows:
    """One view's per-entity state: merge, dedupe and the newest rows."""

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
        self.view = view
        self.ts = config.source.timestamp_column
        columns = view_columns(view, config)
        self.values = [c for c in columns if c not in (view.entity, self.ts)]
        self.plan = ViewPlan.of(view, self.values, self.label_delay, known, back // _US)
        self.schema = arrow_schema(config.source)
        dups = config.contract.duplicates
        self.mode = dups.mode if dups is not None else "drop"
        self._timestamps = {c for c in self.values if pa.types.is_timestamp(self.schema.field(c).type)}
        self._states: OrderedDict[str, tuple[bytes | None, EntityWindows]] = OrderedDict()

    # --- the state cache -----------------------------------------------------------------------------------
    def fresh(self, entity: str, version: bytes | None) -> bool:
        """Whether the state in memory is the one the store holds at ``version`` (None: no stored history)."""
        hit = self._states.get(entity)
        return version is not None and hit is not None and hit[0] == version

    def load(self, entity: str, version: bytes | None, history: list[Row]) -> None:
        """Take an entity's stored history (sorted by event time and arrival) at ``version``."""
        self._states[entity] = (version, EntityWindows(self.plan, sorted(history, key=_ORDER)))
        self._states.move_to_end(entity)

    def committed(self, entities: Iterable[str], version: bytes) -> None:
        """The store now holds these entities' state at ``version``."""
        for e in entities:
            self._states[e] = (version, self._states[e][1])
            self._states.move_to_end(e)
        while len(self._states) > CACHE_ENTITIES:
            self._states.popitem(last=False)

    def forget(self, entities: Iterable[str]) -> None:
        """Drop state that may differ from the store's (a failed or conflicting batch): read again next time."""
        for e in entities:
            self._states.pop(e, None)

    def history(self, entity: str) -> list[Row]:
        """An entity's kept history (sorted by event time and arrival)."""
        return self._states[entity][1].history

    def features(self, entity: str) -> dict[str, object]:
        """An entity's feature row at its newest event (its entity value, time and features)."""
        state = self._states[entity][1]
        return {self.view.entity: orjson.loads(entity), FEATURE_TIMESTAMP: state.newest_us, **state.features()}

    # --- one batch -----------------------------------------------------------------------------------------
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

    def _batch_rows(self, clean: pa.Table, ids: Sequence[str], seq0: int) -> dict[str, dict[str, Row]]:
        """The batch's rows per entity and event id, a second version within the batch resolved by the mode."""
        entities = clean.column(self.view.entity).to_pylist()
        times = clean.column(self.ts).cast(pa.int64()).to_pylist()
        columns = [self._encoded(clean, c) for c in self.values]
        added: dict[str, dict[str, Row]] = {}
        for i, entity in enumerate(entities):
            if entity is None or times[i] is None:
                continue
            mine = added.setdefault(entity_field(entity), {})
            new = (ids[i], seq0 + i, times[i], *(col[i] for col in columns))
            old = mine.get(ids[i])
            if old is None or self._replaces(old, new):
                mine[ids[i]] = new
        return added

    def apply(self, clean: pa.Table, ids: Sequence[str], seq0: int, rewrite: Iterable[str] = frozenset()) -> Update:
        """Merge the batch into the state of its entities (every one of :meth:`touched` must be loaded or fresh).
        The rows returned are those of the entities whose history changed, and of ``rewrite`` (entities an earlier,
        conflicting attempt wrote online from an older state: their row is written again from this one)."""
        changes: dict[str, Change] = {}
        applied: list[int] = []
        for key, rows in self._batch_rows(clean, ids, seq0).items():
            if key not in self._states:
                self._states[key] = (None, EntityWindows(self.plan, []))
            state = self._states[key][1]
            new, late = [], False
            for event_id, row in rows.items():
                old = state.event(event_id)
                if old is None:
                    new.append(row)
                elif self._replaces(old, row):
                    new.append(row)
                    late = True  # a second version of a kept event: the history changes inside
            if not new:
                continue
            new.sort(key=_ORDER)
            applied += [r[2] for r in new]
            newest = state.newest_us
            if not late and (newest is None or new[0][2] >= newest):
                changes[key] = Change(new, state.extend(new))
            else:
                replaced = {r[0] for r in new}
                state.replace(sorted([*(r for r in state.history if r[0] not in replaced), *new], key=_ORDER))
                changes[key] = Change([], replace=state.history)
        again = [k for k in sorted(set(rewrite)) if k not in changes and k in self._states]
        return Update(self._rows([*changes, *again]), changes, np.asarray(applied, dtype=np.int64))

    def _rows(self, entities: list[str]) -> pa.Table:
        """The newest feature row of each entity, typed as the batch engine types them."""
        rows = [self.features(e) for e in entities]
        arrays = {
            self.view.entity: pa.array([r[self.view.entity] for r in rows], self.schema.field(self.view.entity).type),
            FEATURE_TIMESTAMP: pa.array([r[FEATURE_TIMESTAMP] for r in rows], pa.int64()).cast(TIMESTAMP_TYPE),
        }
        for name in self.plan.names:
            kind = pa.int64() if name in self.plan.counts else pa.float64()
            arrays[name] = pa.array([r[name] for r in rows], kind)
        return pa.table(arrays)
