"""kfloop: the ML loop on Kubernetes — kfp pipelines, Feast features, KServe serving, Evidently drift."""

__version__ = "0.1.0"
__all__ = ["__version__"]
