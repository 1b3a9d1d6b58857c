"""Model registry on workspace storage: immutable versions, stages, atomic promotion, lineage."""

from kfloop.registry.store import ModelRegistry, ModelVersion

__all__ = ["ModelRegistry", "ModelVersion"]
