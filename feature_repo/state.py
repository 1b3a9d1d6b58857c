"""Per-view progress of the feature stage, kept beside the offline table in the workspace."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from kfloop.feature_repo.fingerprints import Fingerprint
from kfloop.feature_repo.paths import state_key
from kfloop.storage import Storage


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

    def save(self, storage: Storage) -> None:
        storage.write_text(state_key(self.view), json.dumps(asdict(self), indent=2))


def load_state(storage: Storage, view: str) -> ViewState:
    try:
        body = json.loads(storage.read_text(state_key(view)))
    except FileNotFoundError:
        return ViewState(view=view)
    prints = body.pop("partitions", None)
    state = ViewState(**body)
    if prints is not None:
        state.partitions = {date: Fingerprint(**p) for date, p in prints.items()}
    return state
