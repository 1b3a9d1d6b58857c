"""prometheus_client in its in-process mode, whatever multiprocess directory Feast set or left behind.

Feast's metrics module sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh ``feast_metrics_*`` temp dir when
imported (and child processes inherit it), and prometheus_client picks its value class once, at its first
import: after that, every metric of a serving process would be an mmap-backed multiprocess value (slower on
every request, files in a directory the parent deletes). A kfloop process serves its own /metrics, so
prometheus_client is imported before Feast with such a setting hidden from it, and the entry points drop an
inherited one. A multiprocess directory the user configured is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

NAMES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def _feast_dirs(environ: MutableMapping[str, str]) -> dict[str, str]:
    """The variables naming a Feast temp dir (``feast_metrics_*``), not one the user chose."""
    return {
        name: environ[name]
        for name in NAMES
        if os.path.basename(environ.get(name, "").rstrip("/")).startswith("feast_metrics_")
    }


def import_in_process() -> None:
    """Import prometheus_client with a Feast multiprocess dir hidden from it; ``os.environ`` ends as it was."""
    if "prometheus_client.values" in sys.modules:
        return
    hidden = _feast_dirs(os.environ)
    for name in hidden:
        del os.environ[name]
    try:
        import prometheus_client.values  # noqa: F401
    finally:
        os.environ.update(hidden)


def drop_inherited_feast_dir(environ: MutableMapping[str, str] | None = None) -> None:
    """For entry points: forget a Feast multiprocess dir inherited from a parent process (which deletes it),
    so neither this process nor its children use it."""
    environ = os.environ if environ is None else environ
    for name in _feast_dirs(environ):
        del environ[name]
