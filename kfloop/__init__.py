"""kfloop: the ML loop on Kubernetes — kfp pipelines, Feast features, KServe serving, Evidently drift."""

# Feast's metrics module sets PROMETHEUS_MULTIPROC_DIR when imported, and prometheus_client picks its value
# class once, at its own first import: imported after Feast, every metric of the serving process would be
# an mmap-backed multiprocess value (slower per update, files in a temp dir). kfloop's processes serve one
# /metrics each, so the client is imported first, in its plain in-process mode.
import prometheus_client.values  # noqa: F401

__version__ = "0.1.0"
__all__ = ["__version__"]
