"""The ``training`` section: trainer, threshold choice and the promotion gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kfloop.config._base import Section

Task = Literal["binary", "multiclass", "regression"]
#: The most training processes (``training.workers``) one model is trained by.
MAX_WORKERS = 64
GateMetric = Literal["roc_auc", "pr_auc", "f1", "mae", "rmse", "r2", "macro_f1", "accuracy", "log_loss"]
#: task -> the metrics a gate may compare with the champion's, and whether higher is better.
COMPARABLE: dict[str, dict[str, bool]] = {
    "binary": {"roc_auc": True, "pr_auc": True, "f1": True},
    "regression": {"mae": False, "rmse": False, "r2": True},
    "multiclass": {"macro_f1": True, "accuracy": True, "log_loss": False},
}


class ThresholdTarget(Section):
    """Pick the decision threshold on the validation split: the highest precision whose ``metric`` meets
    ``target`` (recall target), or the highest recall whose precision meets it (precision target); or the best
    F-beta (``f_beta``: beta > 1 favours recall); or the least expected cost ``cost_fp`` * false positives +
    ``cost_fn`` * false negatives (``cost``)."""

    metric: Literal["recall", "precision", "f_beta", "cost"] = Field(
        "recall", description="The metric the threshold must reach (recall, precision) or optimize (f_beta, cost)."
    )
    target: float = Field(0.8, gt=0, le=1, description="The value it must reach on validation (recall, precision).")
    beta: float = Field(1.0, gt=0, le=100, description="f_beta: weight of recall relative to precision.")
    cost_fp: float = Field(1.0, ge=0, description="cost: the cost of one false positive.")
    cost_fn: float = Field(1.0, ge=0, description="cost: the cost of one false negative.")

    @model_validator(mode="after")
    def _some_cost(self) -> ThresholdTarget:
        if self.metric == "cost" and self.cost_fp == 0 and self.cost_fn == 0:
            raise ValueError("cost_fp and cost_fn are both 0: every threshold costs nothing")
        return self


class PromotionGate(Section):
    """A candidate becomes champion only if it meets the minimums and is not worse than the champion
    by more than ``tolerance`` on ``compare_metric``, both scored on the same (new) test split. The minimums
    of binary are ``min_roc_auc`` and ``min_pr_auc``; of regression ``max_rmse``, ``max_mae`` and ``min_r2``; of
    multiclass ``min_macro_f1``."""

    min_roc_auc: float = Field(0.8, ge=0, le=1, description="Smallest test ROC AUC a champion may have.")
    min_pr_auc: float = Field(0.1, ge=0, le=1, description="Smallest test PR AUC a champion may have.")
    compare_metric: GateMetric | None = Field(
        None,
        description="Metric compared with the champion's; null: pr_auc (binary), rmse (regression), macro_f1 "
        "(multiclass).",
    )
    tolerance: float = Field(
        0.01, ge=0, description="How much worse than the champion still passes (in the metric's own units)."
    )
    max_rmse: float | None = Field(None, gt=0, description="Regression: largest test RMSE a champion may have.")
    max_mae: float | None = Field(None, gt=0, description="Regression: largest test MAE a champion may have.")
    min_r2: float | None = Field(0.0, le=1, description="Regression: smallest test R² a champion may have.")
    min_macro_f1: float = Field(0.0, ge=0, le=1, description="Multiclass: smallest test macro-F1 a champion may have.")

    def compared(self, task: str) -> str:
        """The metric compared with the champion's for ``task``."""
        return self.compare_metric or {"regression": "rmse", "multiclass": "macro_f1"}.get(task, "pr_auc")

    def record(self, task: str) -> dict[str, object]:
        """The settings that judge a ``task`` model, as decisions record them (a binary gate's record is the
        same as before tasks existed, so recorded decisions stay replayable)."""
        keys = {"regression": ("max_rmse", "max_mae", "min_r2"), "multiclass": ("min_macro_f1",)}.get(
            task, ("min_roc_auc", "min_pr_auc")
        )
        dumped = self.model_dump(mode="json")
        return {**{k: dumped[k] for k in keys}, "compare_metric": self.compared(task), "tolerance": self.tolerance}


class TrainingConfig(Section):
    """A tabular model (binary classifier or regressor) over the feature service's and request features."""

    task: Task = Field(
        "binary",
        description="binary: 0/1 label, score = probability; regression: numeric label, score = prediction; "
        "multiclass: int or string classes, label = the likeliest class, score = its probability.",
    )

    framework: Literal["pytorch", "tensorflow"] = Field(
        "pytorch", description="pytorch exports TorchScript, tensorflow a SavedModel."
    )
    model_name: str = Field(
        "model",
        pattern=r"^[a-z][a-z0-9-]{0,50}$",
        description="Registry / serving name (at most 51 characters: KServe names Services `<name>-transformer`).",
    )
    owner: str | None = Field(
        None,
        min_length=1,
        description="Who answers for the model and its versions (shown by `kfloop catalog`); null: the project's.",
    )
    description: str | None = Field(
        None, min_length=1, description="What the model predicts, for whom, in a sentence (shown by `kfloop catalog`)."
    )
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
    calibration: Literal["auto", "none", "platt", "isotonic"] = Field(
        "auto",
        description="Binary: map scores to observed frequencies, fitted on validation (class_weight balanced "
        "overstates the positive rate); saved with the model and applied wherever scores are produced; the "
        "threshold is chosen on calibrated scores. auto: none without class weighting; with class_weight "
        "balanced, isotonic when validation has at least 1000 positives and 1000 negatives (fewer: its steps "
        "overfit), else platt. Every map is strictly increasing (platt's slope is kept non-negative; a tiny "
        "share of the raw score breaks isotonic ties), so ROC AUC, PR AUC and the gate see the raw ranking. "
        "Calibration error and Brier score are reported before (_uncalibrated) and after.",
    )
    seed: int = Field(42, description="Same seed, same data: same model (on CPU).")
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="Processes that train one model together (PyTorch DistributedDataParallel: each takes its "
        "share of every batch, gradients are averaged, all stop on the same averaged validation loss; rank 0 "
        "exports and registers). 1: one process, as always. More: in a pipeline step on a cluster with an S3 "
        "workspace, a Kubeflow Training Operator PyTorchJob of 1 Master and workers - 1 Worker pods, each with "
        "cluster.resources.train, which the step submits and waits for; anywhere else (`kfloop run`, a local "
        "workspace) that many local processes (torchrun, gloo). batch_size stays the global batch. PyTorch only.",
    )
    device: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="Where each training process runs. gpu: one CUDA device per process (`nvidia.com/gpu: 1` per "
        "PyTorchJob pod, NCCL between processes); needs an image with a CUDA build of torch (the project's image "
        "ships the CPU wheel). Same seed, same model holds on cpu only.",
    )
    job_timeout_minutes: int = Field(
        120,
        ge=1,
        le=7 * 24 * 60,
        description="workers > 1: how long the train step waits for its processes or PyTorchJob (also the job's "
        "activeDeadlineSeconds) before it fails; not part of the model's identity.",
    )

    threshold: ThresholdTarget = Field(ThresholdTarget(), description="How the decision threshold is chosen.")
    gate: PromotionGate = Field(PromotionGate(), description="When a candidate becomes champion.")

    @model_validator(mode="after")
    def _distributed_fits(self) -> TrainingConfig:
        if self.framework == "tensorflow" and self.workers > 1:
            raise ValueError(
                f"workers: {self.workers} needs framework pytorch; the TensorFlow trainer runs in one process "
                "(set workers: 1, or framework: pytorch)"
            )
        if self.framework == "tensorflow" and self.device == "gpu":
            raise ValueError("device: gpu needs framework pytorch; the TensorFlow trainer runs on CPU")
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> TrainingConfig:
        metric = self.gate.compared(self.task)
        if metric not in COMPARABLE[self.task]:
            raise ValueError(
                f"gate.compare_metric: {metric} is not a {self.task} metric (one of {', '.join(COMPARABLE[self.task])})"
            )
        if self.task != "binary" and self.calibration in ("platt", "isotonic"):
            raise ValueError(
                f"calibration: {self.calibration} calibrates binary scores; a {self.task} model takes none"
            )
        if self.task != "binary" and self.threshold != ThresholdTarget():
            raise ValueError(
                f"threshold: a {self.task} model has no decision threshold; remove the section (from an `extends:` "
                "base: set threshold back to its defaults in this file)"
            )
        judged = set(self.gate.record(self.task))
        default = PromotionGate()
        foreign = [k for k in _GATE_LIMITS if k not in judged and getattr(self.gate, k) != getattr(default, k)]
        if foreign:
            back = ", ".join(f"{k}: {getattr(default, k)}" for k in foreign)
            raise ValueError(
                f"gate.{', gate.'.join(foreign)}: not a {self.task} setting (a {self.task} gate reads "
                f"{', '.join(k for k in _GATE_LIMITS if k in judged)}); remove it, or, when it comes from an "
                f"`extends:` base, set it back to its default in this file (gate: {{{back}}})"
            )
        return self


#: The gate's per-task limits: one changed from its default for another task than the model's is a mistake
#: (compared with the default, not "was it set", so a dumped and reloaded config stays valid).
_GATE_LIMITS = ("min_roc_auc", "min_pr_auc", "max_rmse", "max_mae", "min_r2", "min_macro_f1")
