"""kfloop: the ML loop on Kubernetes — kfp pipelines, Feast features, KServe serving, Evidently drift."""

import os as _os

# Feast's metrics module sets PROMETHEUS_MULTIPROC_DIR to a fresh `feast_metrics_*` temp dir when imported
# (and child processes inherit it), and prometheus_client picks its value class once, at its first import:
# after that, every metric of a serving process would be an mmap-backed multiprocess value (slower on every
# request, files in a directory the parent deletes). A kfloop process serves its own /metrics, so such an
# inherited Feast setting is dropped and prometheus_client is imported before Feast can set it again. A
# multiprocess directory the user configured is left alone.
for _name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
    if _os.path.basename(_os.environ.get(_name, "").rstrip("/")).startswith("feast_metrics_"):
        del _os.environ[_name]
import prometheus_client.values  # noqa: E402, F401

__version__ = "0.1.0"
__all__ = ["__version__"]
