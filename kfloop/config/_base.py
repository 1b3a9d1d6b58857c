"""Base model for every config section: frozen, strict, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Frozen so it can be passed down safely; ``extra="forbid"`` catches typos."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


#: Fields that describe a section for people (the catalog) and never change what it computes: fingerprints and
#: model cards leave them out, so editing a description never recomputes features or retrains a model.
METADATA_FIELDS = frozenset({"owner", "description"})
