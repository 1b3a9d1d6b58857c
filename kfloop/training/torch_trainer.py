"""The PyTorch tabular model: embeddings per categorical column + standardized numbers -> MLP -> one output
(a logit for binary, the standardized label for regression).

Training is seeded and deterministic on CPU (same seed and data -> identical weights and predictions)
without touching the caller's global state: the torch RNG is forked, and the deterministic-algorithms
flag and thread count are restored afterwards. Exported as TorchScript (``model.pt``) whose
``forward(x_num, x_cat)`` returns probabilities (or predictions), loadable with ``torch.jit.load`` alone.

Inside a process group (``training.workers`` > 1, joined by the worker entrypoint: ``kfloop.training.distributed``)
the same loop runs as DistributedDataParallel on this rank's share of every batch; outside one it is the
single-process loop, unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from kfloop.config import TrainingConfig
from kfloop.files import atomic_write
from kfloop.training import classes, distributed, model_io
from kfloop.training.base import Fit, Split
from kfloop.training.preprocess import Preprocessor

DROPOUT = 0.1
#: Intra-op threads while training. The model is small (batch x ~30 -> 64 -> 32): one thread measured
#: 3-5x faster per step than two on a shared 2-CPU machine, and it is at most the brief's 2 either way.
THREADS = 1


class TabularNet(nn.Module):
    """One embedding per categorical column, concatenated with the numeric inputs, then an MLP with
    ReLU and dropout to a single logit per row."""

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        embedding_dim: int,
        hidden_units: tuple[int, ...],
        outputs: int = 1,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList([nn.Embedding(c, embedding_dim) for c in cardinalities])
        layers: list[nn.Module] = []
        width = n_numeric + embedding_dim * len(cardinalities)
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(DROPOUT)]
            width = units
        layers.append(nn.Linear(width, outputs))  # one logit, or one per class (squeeze(1) keeps those)
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        parts = [x_num]
        for i, embedding in enumerate(self.embeddings):
            parts.append(embedding(x_cat[:, i]))
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)


class Serving(nn.Module):
    """The exported module: probabilities [n] from (x_num float32 [n, k], x_cat int64 [n, m])."""

    def __init__(self, net: TabularNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x_num, x_cat))


class RegressionServing(nn.Module):
    """The exported regressor: predictions [n] in the label's units (the net learns the standardized label)."""

    def __init__(self, net: TabularNet, center: float, scale: float) -> None:
        super().__init__()
        self.net = net
        self.center, self.scale = center, scale

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        return self.net(x_num, x_cat) * self.scale + self.center


class MulticlassServing(nn.Module):
    """The exported multiclass model: class probabilities [n, k] (softmax over the logits)."""

    def __init__(self, net: TabularNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        return torch.softmax(self.net(x_num, x_cat), dim=1)


def _output(net: TabularNet) -> nn.Module:
    """The network as served: sigmoid probabilities, de-standardized predictions for a regressor, or
    softmax class probabilities."""
    scaling = getattr(net, "label_scaling", None)
    if getattr(net, "multiclass", False):
        return MulticlassServing(net)
    return Serving(net) if scaling is None else RegressionServing(net, *scaling)


@contextlib.contextmanager
def _reproducible(seed: int, gpu: bool = False) -> Iterator[None]:
    """Seeded torch RNG, deterministic kernels and THREADS threads; all restored on exit. On a GPU, kernels
    without a deterministic version warn instead of failing (bit-identical models are a CPU promise)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(THREADS)
        torch.use_deterministic_algorithms(True, warn_only=gpu)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)


def _predictor(net: TabularNet) -> model_io.ArrayPredictor:
    output = _output(net)

    def predict(x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        output.eval()
        with torch.no_grad():
            return output(torch.from_numpy(x_num), torch.from_numpy(x_cat)).numpy()

    return lambda x_num, x_cat: model_io.in_batches(predict, x_num, x_cat)


def _network(
    config: TrainingConfig, preprocessor: Preprocessor, train: Split, val: Split, pos_weight: float
) -> tuple[TabularNet, nn.Module, np.ndarray, np.ndarray]:
    """The network, its loss and the (train, validation) targets it learns: labels as they are, class indices,
    or the standardized label of a regressor."""
    k = int(train.y.max()) + 1 if config.task == "multiclass" else 1
    net = TabularNet(
        len(preprocessor.numeric), preprocessor.cardinalities(), config.embedding_dim, config.hidden_units, k
    )
    y_train, y_val = train.y, val.y
    loss_fn: nn.Module
    if config.task == "multiclass":
        net.multiclass = True  # read by _output: softmax over the class logits
        weights = classes.class_weights(train.y, k, config.class_weight == "balanced")
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights))
    elif config.task == "regression":
        center, scale = model_io.label_scaling(train.y)
        net.label_scaling = (center, scale)  # read by _output: serving returns the label's units
        y_train, y_val = (train.y - center) / scale, (val.y - center) / scale
        loss_fn = nn.MSELoss()
    else:
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
    return net, loss_fn, y_train, y_val


def fit(config: TrainingConfig, preprocessor: Preprocessor, train: Split, val: Split, pos_weight: float) -> Fit:
    """Adam on weighted BCE-with-logits (binary) or MSE on the standardized label (regression) in shuffled
    mini-batches; stop when validation loss has not improved for ``early_stopping_patience`` epochs and keep
    the best epoch's weights. In a process group: DDP over this rank's share of every batch, the stop decided
    on the ranks' agreed validation loss."""
    world = distributed.current()
    gpu = config.device == "gpu"
    device = distributed.cuda_device(world.local_rank if world else 0) if gpu else torch.device("cpu")
    with _reproducible(config.seed, gpu):
        net, loss_fn, y_train, y_val = _network(config, preprocessor, train, val, pos_weight)
        if gpu:
            net.to(device)
            loss_fn.to(device)
        model: nn.Module = net
        if world is not None:
            model = distributed.wrap(net, world)  # rank 0's initial weights, gradients averaged in backward
            torch.manual_seed(config.seed + world.rank)  # each rank its own dropout masks, as over one batch
        optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        rng = np.random.default_rng(config.seed)  # the same batch order on every rank
        y_type = np.int64 if config.task == "multiclass" else np.float32  # class indices, or targets
        tensors = (train.x_num, train.x_cat, y_train.astype(y_type), val.x_num, val.x_cat, y_val.astype(y_type))
        x_num, x_cat, y, v_num, v_cat, v_y = (torch.from_numpy(a).to(device) for a in tensors)
        batches = max(1, -(-len(y) // config.batch_size))
        if world is not None:
            distributed.check_batches(len(y), batches, world)
        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state, waited = float("inf"), 0, None, 0
        for epoch in range(1, config.epochs + 1):
            model.train()
            total = 0.0
            for batch in np.array_split(rng.permutation(len(y)), batches):
                rows = batch if world is None else distributed.shard(batch, world)
                index = torch.from_numpy(rows)
                optimizer.zero_grad()
                loss = loss_fn(model(x_num[index], x_cat[index]), y[index])
                # a rank's mean weighted by its share: DDP's mean of the ranks' gradients is the batch mean's
                (loss if world is None else loss * (len(rows) * world.size / len(batch))).backward()
                optimizer.step()
                total += loss.item() * len(rows)
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(net(v_num, v_cat), v_y))
            if world is not None:  # the same weights on every rank; one agreed number, so one stop decision
                total, val_loss = distributed.total(total, world), distributed.agreed_mean(val_loss, world)
            history.append({"epoch": epoch, "train_loss": total / len(y), "val_loss": val_loss})
            if val_loss < best_loss:
                best_loss, best_epoch, waited = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= config.early_stopping_patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        if gpu:
            net.to("cpu")  # predicted and exported on CPU (serving loads with map_location cpu)
        net.eval()
    return Fit(net, _predictor(net), history, best_epoch, versions())


def export(net: TabularNet, preprocessor: Preprocessor, directory: Path) -> Path:
    """TorchScript of ``Serving(net)`` at ``directory/model.pt`` (its input widths come from ``net``)."""
    net.eval()
    scripted = torch.jit.script(_output(net).eval())
    path = directory / model_io.TORCHSCRIPT_FILE
    atomic_write(path, lambda fh: torch.jit.save(scripted, fh))
    return path


def load(directory: Path) -> model_io.ArrayPredictor:
    """The TorchScript module ``export`` wrote into ``directory``."""
    return model_io.load_torchscript(directory / model_io.TORCHSCRIPT_FILE)


def versions() -> dict[str, str]:
    return {"torch": torch.__version__}
