"""Per-view progress of the feature stage, kept beside the offline table in the workspace."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

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

    def save(self, storage: Storage) -> None:
        storage.write_text(state_key(self.view), json.dumps(asdict(self), indent=2))


def load_state(storage: Storage, view: str) -> ViewState:
    try:
        return ViewState(**json.loads(storage.read_text(state_key(view))))
    except FileNotFoundError:
        return ViewState(view=view)
