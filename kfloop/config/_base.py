"""Base model for every config section: frozen, strict, unknown keys rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Frozen so it can be passed down safely; ``extra="forbid"`` catches typos."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
