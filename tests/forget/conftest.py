"""One small workspace through the real stages (ingest with bad rows, validate with contract quarantine, features,
materialize, a training set, a registered version) plus inference-log files, built once per test process and
copied for each test that erases."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop.demo import DefectSpec, DemoSpec, generate, write_frame
from kfloop.registry import ModelRegistry
from kfloop.serving.log_table import TIMESTAMP, inference_log_schema, log_prefix
from kfloop.storage import LocalStorage
from tests.feature_repo.conftest import redis_server  # noqa: F401 (the Redis tests' fixture)
from tests.feature_repo.harness import Loop, OnlineBackend, feature_config, sqlite_backend

#: The erased customer and one other whose data must stay as it was.
ERASED, OTHER = "c-00004", "c-00002"


@dataclass
class Built:
    root: Path  # the prepared workspace (never changed: tests copy it)
    source: Path  # the CSV ingested
    training_run: str


def _log_file(config, customers: list[str]) -> pa.Table:
    schema = inference_log_schema(config)
    n = len(customers)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols[TIMESTAMP] = pa.array([1_767_225_600_000_000 + i for i in range(n)], pa.int64()).cast(
        schema.field(TIMESTAMP).type
    )
    cols["customer_id"] = pa.array(customers, pa.string())
    cols["merchant_id"] = pa.array(["m-0001"] * n, pa.string())
    return pa.table(cols, schema=schema)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("forget")
    loop = Loop.create(base / "ws", sqlite_backend())
    frame = generate(DemoSpec(rows=2500, seed=5, defects=DefectSpec(out_of_range=0.02, wrong_types=0.01))).frame
    source = base / "source.csv"
    write_frame(frame, source, "csv")
    loop.load(source)
    loop.materialize()
    ts = loop.training_set()
    files = base / "model"
    files.mkdir()
    (files / "model.bin").write_bytes(b"placeholder weights")
    ModelRegistry(loop.storage, loop.config.training.model_name).register(
        files, {"training_set": {"run_id": ts.run_id, "prefix": ts.prefix}, "pipeline_run": "forget-tests"}
    )
    prefix = log_prefix(loop.config)
    for day, customers in (("2026-03-01", [ERASED, OTHER, "c-00003"]), ("2026-03-02", [OTHER, "c-00003"])):
        path = base / f"log-{day}.parquet"
        pq.write_table(_log_file(loop.config, customers), path, compression="zstd")
        loop.storage.upload_file(path, f"{prefix}/date={day}/part-0.parquet")
    return Built(loop.workspace, source, ts.run_id)


def workspace_copy(built: Built, dest: Path, backend: OnlineBackend | None = None, edit=None) -> tuple:
    """A copy of the prepared workspace: (config, storage)."""
    shutil.copytree(built.root, dest)
    config = feature_config(dest, backend or sqlite_backend(), edit)
    return config, LocalStorage(dest)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes under ``root`` (keys relative, with ``/``)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
