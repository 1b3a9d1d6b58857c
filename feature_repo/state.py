"""Per-view progress of the feature stage, kept beside the offline table in the workspace."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields

from kfloop.feature_repo.fingerprints import Fingerprint
from kfloop.layout import state_key, view_lease_key
from kfloop.storage import Storage
from kfloop.storage.lease import Lease, lease

#: A feature or materialize run waits this long for another run holding the same view; a holder silent (no
#: heartbeat) for LEASE_STALE_S is taken to be dead and taken over.
LEASE_TIMEOUT_S = 600.0
LEASE_STALE_S = 120.0


def view_lease(storage: Storage, view: str, run_id: str) -> AbstractContextManager[Lease]:
    """The lease every writer of one view's offline table, state and online values holds, so overlapping
    feature and materialize runs cannot interleave."""
    return lease(
        storage,
        view_lease_key(view),
        name=f"feature view {view}",
        owner=run_id,
        timeout_s=LEASE_TIMEOUT_S,
        stale_after_s=LEASE_STALE_S,
    )


@dataclass
class ViewState:
    """What has been computed and materialized for one feature view."""

    view: str
    computed_until: str | None = None  # newest event time in the offline table (ISO, UTC)
    offline_rows: int = 0
    materialized_until: str | None = None  # newest event time written to the online store
    online_entities: int = 0  # entity rows written to the online store so far (upserts counted once each)
    definition: str | None = None  # hash of the view's definition: a change forces a rebuild
    # event date → fingerprint of the clean rows (up to computed_until) the table was computed from;
    # None: unknown (a state written before fingerprints existed), so the next run rebuilds the view
    partitions: dict[str, Fingerprint] | None = None
    # a few entities the last materialization wrote: if none of them is online any more, the store was wiped
    # (a Redis without persistence restarted, a deleted SQLite file) and the next run writes every entity again
    online_probe: list | None = None

    def save(self, storage: Storage) -> None:
        storage.write_text(state_key(self.view), json.dumps(asdict(self), indent=2))


def load_state(storage: Storage, view: str) -> ViewState:
    try:
        body = json.loads(storage.read_text(state_key(view)))
    except FileNotFoundError:
        return ViewState(view=view)
    prints = body.pop("partitions", None)
    known = {f.name for f in fields(ViewState)}
    state = ViewState(**{k: v for k, v in body.items() if k in known})  # a newer kfloop's fields are skipped
    if prints is not None:
        state.partitions = {date: Fingerprint(**p) for date, p in prints.items()}
    return state
