"""Erasure of one entity from every store (``kfloop forget``) and the tombstones ingest consults.

The erasure side imports Feast (seconds); ingest needs only the tombstones (:mod:`kfloop.forget.target`), so
the package resolves its names lazily and ``import kfloop.forget.target`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfloop.forget.erase import ACTION, ForgetReport, forget, trained_on
    from kfloop.forget.target import Target, parse_target

__all__ = ["ACTION", "ForgetReport", "Target", "forget", "parse_target", "trained_on"]

_HOME = {"ACTION": "erase", "ForgetReport": "erase", "forget": "erase", "trained_on": "erase"}
_HOME |= {"Target": "target", "parse_target": "target"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
