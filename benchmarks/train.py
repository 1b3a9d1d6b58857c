"""Train benchmark: the demo fraud model on a 1M-row demo training set, PyTorch and TensorFlow.

- ours:  ``kfloop.training.trainer.train(config, train, validation)`` with a fixed epoch count (early
         stopping patience above it, so every run trains the same epochs): everything a real run does,
         i.e. fit + apply the preprocessor on the frames, class weights, a validation loss per epoch,
         best-weights bookkeeping, then the threshold choice and metrics on validation.
- floor: a bare training loop of the same network over in-memory tensors (preprocessed untimed): no
         preprocessing, no validation. PyTorch: the same ``TabularNet``, Adam, weighted
         ``BCEWithLogitsLoss``, batch size and thread count, one shuffle per epoch then contiguous
         slices. TensorFlow: the same ``build_model`` and ``compile``, ``model.fit`` on numpy arrays with
         the same class weights.

rows/s is per epoch: train rows x epochs / seconds (model build included in every case, as ours builds
its model). Both frameworks run interleaved in one process (``KFLOOP_BENCH_FRAMEWORKS=pytorch`` or
``tensorflow`` runs one). The harness ranks every case against the fastest floor of the run, so with
both frameworks the table's "of floor" column mixes them: the per-framework ours ÷ floor ratios are
printed after the table (from each case's median time).

TensorFlow op determinism, which ours turns on process-wide and which cannot be turned off, is enabled
by the floor too, before it builds its model, so ours and floor always train under the same setting.
Each framework is warmed up (untimed) first, so no case pays the process's first-run costs.

Data: the demo rows, each joined per feature view with its entity's newest feature row strictly before
the row's event time (``compute_view`` + ``merge_asof``, as the trainer tests build it without Feast),
split 70/15 by time into train/validation; cached as Parquet under ``.kfloop/bench/data/``.
"""

from __future__ import annotations

import atexit
import hashlib
import inspect
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import kfloop.aggregates
from benchmarks import ROOT
from benchmarks.harness import Benchmark, Case
from benchmarks.ingest import _demo_version
from kfloop.aggregates import compute_view
from kfloop.config import Config, load_config, parse_config
from kfloop.config.contract import parse_duration
from kfloop.demo import DemoSpec, generate
from kfloop.files import atomic_write
from kfloop.training.base import FRAMEWORKS, trainer_for
from kfloop.training.preprocess import Preprocessor, feature_columns
from kfloop.training.trainer import positive_weight, train

ROWS = 1_000_000
SEED = 42
EPOCHS = 2
TRAIN_FRACTION, VALIDATION_FRACTION = 0.70, 0.15
WARMUP_ROWS = 4096
CONFIG_PATH = ROOT / "examples" / "fraud" / "kfloop.yaml"


# --- data: a point-in-time training set without Feast (cached) ------------------------------------


def training_set(config: Config, rows: int, seed: int) -> pd.DataFrame:
    """Demo rows in generation order, each joined per view with its entity's newest feature row strictly
    before the row's event time (within the view's ttl)."""
    ts = config.source.timestamp_column
    frame = generate(DemoSpec(rows=rows, seed=seed)).frame
    frame[ts] = frame[ts].astype("datetime64[us, UTC]")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    out = frame.assign(_row=np.arange(len(frame))).sort_values(ts, kind="stable")
    for view in config.features.views:
        delay, known = parse_duration(config.features.label_delay), config.source.available_after
        feats = compute_view(table, view, ts, delay, available_after=known).to_pandas()
        feats = feats.rename(columns={ts: "_feature_time"})
        feats["_feature_time"] = feats["_feature_time"].astype("datetime64[us, UTC]")
        out = pd.merge_asof(
            out,
            feats.sort_values("_feature_time", kind="stable"),
            left_on=ts,
            right_on="_feature_time",
            by=view.entity,
            direction="backward",
            allow_exact_matches=False,
            tolerance=pd.Timedelta(parse_duration(view.ttl)),
        ).drop(columns="_feature_time")
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def _data_version(config: Config) -> str:
    """Demo generator, aggregation engine, join code and feature definitions: a change to any never
    reuses a stale cached file."""
    h = hashlib.sha256(_demo_version().encode())
    h.update(Path(kfloop.aggregates.__file__).read_bytes())
    h.update(inspect.getsource(training_set).encode())
    h.update(config.features.model_dump_json().encode())
    return h.hexdigest()[:8]


def cached_training_set(config: Config, rows: int, seed: int, data_dir: Path) -> tuple[Path, pd.DataFrame]:
    """The joined demo rows for (rows, seed), built once and cached as Parquet (written atomically)."""
    path = data_dir / f"train-{rows}-{seed}-{_data_version(config)}.parquet"
    if path.is_file():
        return path, pd.read_parquet(path)
    frame = training_set(config, rows, seed)
    atomic_write(path, lambda fh: frame.to_parquet(fh, index=False))
    return path, frame


def time_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): the first 70 % and the next 15 % of the rows by event time (test unused)."""
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    a, b = int(len(frame) * TRAIN_FRACTION), int(len(frame) * (TRAIN_FRACTION + VALIDATION_FRACTION))
    return frame.iloc[:a].reset_index(drop=True), frame.iloc[a:b].reset_index(drop=True)


def bench_config(framework: str, epochs: int = EPOCHS) -> Config:
    """The fraud example's config for ``framework``, training exactly ``epochs`` epochs."""
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    data["training"].update(framework=framework, epochs=epochs, early_stopping_patience=epochs + 1)
    return parse_config(data, "train benchmark")


@dataclass(frozen=True)
class Arrays:
    """The floor's pre-made inputs: the train split exactly as ours feeds its network."""

    x_num: np.ndarray  # float32 [n, k]
    x_cat: np.ndarray  # int64 [n, m]
    y: np.ndarray  # float32 [n]
    cardinalities: list[int]
    pos_weight: float

    def head(self, rows: int) -> Arrays:
        return Arrays(self.x_num[:rows], self.x_cat[:rows], self.y[:rows], self.cardinalities, self.pos_weight)


def floor_arrays(config: Config, train_frame: pd.DataFrame) -> Arrays:
    numeric, categorical = feature_columns(config)
    pre = Preprocessor.fit(train_frame, numeric, categorical)
    x_num, x_cat = pre.transform(train_frame)
    y = train_frame[config.source.label_column].to_numpy(dtype=np.float32)
    weight = positive_weight(y) if config.training.class_weight == "balanced" else 1.0
    return Arrays(x_num, x_cat, y, pre.cardinalities(), weight)


# --- ours -----------------------------------------------------------------------------------------


def run_ours(config: Config, train_frame: pd.DataFrame, validation: pd.DataFrame) -> None:
    model = train(config, train_frame, validation)
    if len(model.history) != config.training.epochs:
        raise AssertionError(f"ours trained {len(model.history)} epochs, expected {config.training.epochs}")


# --- floors ---------------------------------------------------------------------------------------


def run_torch_floor(config: Config, a: Arrays) -> None:
    """The same network, optimizer, loss, batch size and thread count; no preprocessing, no validation."""
    import torch
    from torch import nn

    from kfloop.training.torch_trainer import THREADS, TabularNet

    t = config.training
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        torch.manual_seed(t.seed)
        net = TabularNet(a.x_num.shape[1], a.cardinalities, t.embedding_dim, t.hidden_units)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(a.pos_weight, dtype=torch.float32))
        optimizer = torch.optim.Adam(net.parameters(), lr=t.learning_rate)
        x_num, x_cat, y = torch.from_numpy(a.x_num), torch.from_numpy(a.x_cat), torch.from_numpy(a.y)
        n, size = len(y), t.batch_size
        net.train()
        for _ in range(t.epochs):
            order = torch.randperm(n)
            xn, xc, yy = x_num[order], x_cat[order], y[order]
            for start in range(0, n, size):
                optimizer.zero_grad()
                loss = loss_fn(net(xn[start : start + size], xc[start : start + size]), yy[start : start + size])
                loss.backward()
                optimizer.step()
        if not torch.isfinite(loss):
            raise AssertionError(f"torch floor diverged: loss {float(loss)}")
    finally:
        torch.set_num_threads(threads)


def run_tf_floor(config: Config, a: Arrays) -> None:
    """``model.fit`` of the same Keras model on numpy arrays, same class weights; no validation."""
    import keras
    import tensorflow as tf

    from kfloop.training.tf_trainer import build_model

    t = config.training
    tf.config.experimental.enable_op_determinism()  # as ours does (process-wide; a no-op once on)
    keras.utils.set_random_seed(t.seed)
    model = build_model(a.x_num.shape[1], a.cardinalities, t.embedding_dim, t.hidden_units)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=t.learning_rate), loss="binary_crossentropy")
    history = model.fit(
        [a.x_num, a.x_cat],
        a.y,
        batch_size=t.batch_size,
        epochs=t.epochs,
        class_weight={0: 1.0, 1: a.pos_weight},
        shuffle=True,
        verbose=0,
    )
    if not np.isfinite(history.history["loss"][-1]):
        raise AssertionError(f"tensorflow floor diverged: loss {history.history['loss'][-1]}")


# --- per-framework ratios -------------------------------------------------------------------------


class Tally:
    """Each case's run times, kept here too because the harness's "of floor" is against the fastest
    floor of the whole run; printed per framework when the process exits."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.times: dict[tuple[str, str], list[float]] = {}

    def timed(self, framework: str, role: str, fn: Callable[[], None]) -> Callable[[Any], None]:
        def run(_: Any) -> None:
            t0 = time.perf_counter()
            fn()
            self.times.setdefault((framework, role), []).append(time.perf_counter() - t0)

        return run

    def lines(self) -> list[str]:
        out = []
        for fw in dict.fromkeys(fw for fw, _ in self.times):
            ours, floor = self.times.get((fw, "ours")), self.times.get((fw, "floor"))
            if ours and floor:
                o, f = self.rows / statistics.median(ours), self.rows / statistics.median(floor)
                out.append(f"train {fw}: ours {o:,.0f} rows/s, floor {f:,.0f} rows/s, ours/floor {o / f:.0%}")
        return out

    def print(self) -> None:
        for line in self.lines():
            print(line, flush=True)


def selected_frameworks() -> tuple[str, ...]:
    raw = os.environ.get("KFLOOP_BENCH_FRAMEWORKS", ",".join(FRAMEWORKS))
    chosen = tuple(fw.strip() for fw in raw.split(",") if fw.strip())
    unknown = [fw for fw in chosen if fw not in FRAMEWORKS]
    if not chosen or unknown:
        raise ValueError(f"KFLOOP_BENCH_FRAMEWORKS={raw!r}: pick from {', '.join(FRAMEWORKS)}")
    return chosen


def build(rows: int | None = None, data_dir: Path | None = None, seed: int = SEED) -> Benchmark:
    """Build (cached) and split the training set, pre-make the floor's arrays, warm up, then the cases."""
    n = rows or ROWS
    frameworks = selected_frameworks()
    configs = {fw: bench_config(fw) for fw in frameworks}
    base = configs[frameworks[0]]
    path, frame = cached_training_set(base, n, seed, data_dir or ROOT / ".kfloop" / "bench" / "data")
    train_frame, validation = time_split(frame)
    del frame
    arrays = floor_arrays(base, train_frame)
    floors = {"pytorch": run_torch_floor, "tensorflow": run_tf_floor}
    versions: dict[str, str] = {}
    for fw in frameworks:  # untimed warm-up: imports, kernels, first-trace costs
        versions.update(trainer_for(fw).versions())
        tiny = bench_config(fw, epochs=1)
        run_ours(tiny, train_frame.iloc[:WARMUP_ROWS], validation.iloc[:WARMUP_ROWS])
        floors[fw](tiny, arrays.head(WARMUP_ROWS))

    tally = Tally(len(train_frame) * EPOCHS)
    atexit.register(tally.print)
    cases: list[Case[None]] = []
    for fw in frameworks:
        config = configs[fw]
        cases.append(
            Case(
                f"{fw}: kfloop train",
                "ours",
                tally.timed(fw, "ours", lambda c=config: run_ours(c, train_frame, validation)),
            )
        )
        floor_name = "bare loop (tensors)" if fw == "pytorch" else "model.fit (numpy)"
        cases.append(
            Case(f"{fw}: {floor_name}", "floor", tally.timed(fw, "floor", lambda c=config, f=floors[fw]: f(c, arrays)))
        )
    numeric, categorical = feature_columns(base)
    params = {
        "seed": seed,
        "demo_rows": n,
        "train_rows": len(train_frame),
        "validation_rows": len(validation),
        "epochs": EPOCHS,
        "batch_size": base.training.batch_size,
        "hidden_units": list(base.training.hidden_units),
        "numeric_inputs": len(numeric),
        "categorical_inputs": len(categorical),
        "pos_weight": arrays.pos_weight,
        "frameworks": list(frameworks),
        "data": str(path),
        "config": str(CONFIG_PATH),
        **versions,
    }
    name = "train" if len(frameworks) == len(FRAMEWORKS) else f"train_{frameworks[0]}"
    title = f"{' + '.join(frameworks)}, {EPOCHS} epochs on {len(train_frame):,} train rows (rows/s = rows x epochs / s)"
    return Benchmark(name, title, cases, rows=len(train_frame) * EPOCHS, params=params)
