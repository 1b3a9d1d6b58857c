"""kfloop: the ML loop on Kubernetes — kfp pipelines, Feast features, KServe serving, Evidently drift."""

from kfloop._prometheus import import_in_process as _import_prometheus_in_process

# forced by prometheus_client: it picks in-process or mmap values at its first import, so it goes before Feast's
_import_prometheus_in_process()

__version__ = "0.1.0"
__all__ = ["__version__"]
