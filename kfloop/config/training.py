"""The ``training`` section: trainer, threshold choice and the promotion gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kfloop.config._base import Section


class ThresholdTarget(Section):
    """Pick the decision threshold on the validation split: the highest precision whose ``metric`` meets
    ``target`` (recall target), or the highest recall whose precision meets it (precision target)."""

    metric: Literal["recall", "precision"] = Field("recall", description="The metric the threshold must reach.")
    target: float = Field(0.8, gt=0, le=1, description="The value it must reach on validation.")


class PromotionGate(Section):
    """A candidate becomes champion only if it meets the minimums and is not worse than the champion
    by more than ``tolerance`` on ``compare_metric``, both scored on the same (new) test split."""

    min_roc_auc: float = Field(0.8, ge=0, le=1, description="Smallest test ROC AUC a champion may have.")
    min_pr_auc: float = Field(0.1, ge=0, le=1, description="Smallest test PR AUC a champion may have.")
    compare_metric: Literal["roc_auc", "pr_auc", "f1"] = Field(
        "pr_auc", description="Metric compared with the champion's."
    )
    tolerance: float = Field(0.01, ge=0, le=1, description="How much worse than the champion still passes.")


class TrainingConfig(Section):
    """A tabular binary classifier over the feature service's features plus the request features."""

    framework: Literal["pytorch", "tensorflow"] = Field(
        "pytorch", description="pytorch exports TorchScript, tensorflow a SavedModel."
    )
    model_name: str = Field("model", pattern=r"^[a-z][a-z0-9-]{0,62}$", description="Registry / serving name.")
    hidden_units: tuple[int, ...] = Field((64, 32), min_length=1, description="Width of each hidden layer.")
    embedding_dim: int = Field(4, ge=1, le=64, description="Per categorical column.")
    epochs: int = Field(20, ge=1, le=1000, description="Most passes over the training split.")
    batch_size: int = Field(1024, ge=16, description="Rows per optimizer step.")
    learning_rate: float = Field(0.003, gt=0, lt=1, description="Adam learning rate.")
    early_stopping_patience: int = Field(
        3, ge=1, description="Epochs without a better validation loss before training stops (best weights kept)."
    )
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="balanced weights positives by negatives / positives."
    )
    seed: int = Field(42, description="Same seed, same data: same model (on CPU).")
    threshold: ThresholdTarget = Field(ThresholdTarget(), description="How the decision threshold is chosen.")
    gate: PromotionGate = Field(PromotionGate(), description="When a candidate becomes champion.")
