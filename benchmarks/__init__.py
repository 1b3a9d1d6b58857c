"""Side-by-side benchmarks (ours vs peer vs floor), run with ``python -m benchmarks [NAME ...]``.

Not tests: they measure, print ratios, and write ``.kfloop/bench/<name>.json``. Modules are imported
only when their benchmark runs, so ``--list`` and errors stay instant.
"""

from __future__ import annotations

from pathlib import Path

#: Repository root (benchmarks/ lives at the top level, beside pyproject.toml).
ROOT = Path(__file__).resolve().parent.parent
#: Default results folder (git-ignored with the rest of .kfloop/).
DEFAULT_OUT = ROOT / ".kfloop" / "bench"

#: name → (module exposing ``build(rows, data_dir) -> Benchmark``, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "ingest": ("benchmarks.ingest", "demo rows CSV → partitioned Parquet (kfloop ingest vs pandas vs pyarrow)"),
    "validate": ("benchmarks.validate", "demo contract on 20-column lake rows (kfloop validate vs pandera vs pandas)"),
    "materialize": (
        "benchmarks.materialize",
        "1M entity rows → online store (kfloop vs feast materialize vs executemany/HSET); KFLOOP_BENCH_STORE=redis",
    ),
    "online_read": (
        "benchmarks.online_read",
        "1 entity x all demo features (ServingLookup vs feast get_online_features vs raw read); p50/p99",
    ),
    "train": (
        "benchmarks.train",
        "1M demo rows, 2 epochs (kfloop train vs bare loop on tensors), PyTorch + TensorFlow; rows/s per epoch",
    ),
    "train_ddp": (
        "benchmarks.train_ddp",
        "1M demo rows, 2 epochs, the whole train step: training.workers 2 (PyTorch DDP, torchrun, gloo) vs 1 process; "
        "rows/s and each model's ROC AUC",
    ),
    "serving": (
        "benchmarks.serving",
        "max rps at p99 ≤ 10 ms, then p50/p99 at half of it (kfloop serve vs MLServer vs KServe echo / uvicorn); "
        "inference log on vs off at 1 and 4 connections (alone: KFLOOP_BENCH_SERVING=log)",
    ),
    "drift": (
        "benchmarks.drift",
        "1M-row window x 20 columns vs 1M-row reference (kfloop dataset_drift vs Evidently DataDriftPreset vs numpy)",
    ),
    "forget": (
        "benchmarks.forget",
        "erase one customer from a 1M-row workspace, every store searched after (kfloop forget vs pandas rewrite "
        "+ Feast entity-type delete vs pyarrow filter+write)",
    ),
    "training_set": (
        "benchmarks.training_set",
        "1M labelled rows x 3 views (10, 1k, 100k keys), ttl 1 d and 30 d: point-in-time join (kfloop as-of "
        "store vs Feast's DuckDB store vs raw DuckDB ASOF JOIN); KFLOOP_BENCH_KEYS, KFLOOP_BENCH_PEER_PAIRS",
    ),
    "stream": (
        "benchmarks.stream",
        "2,000 events/s for 60 s via Redis Streams → SQLite/Redis online store: push lag p50/p99 and max rate at "
        "p99 ≤ 5 s (kfloop stream worker vs pandas + Feast write_to_online_store vs online_write_batch); ~30 min",
    ),
}
