"""The inference log against real storage: every row once, off the request path, bounded, recoverable."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from kfloop.config import Config, parse_config
from kfloop.errors import StorageError
from kfloop.serving import inference_log
from kfloop.serving.inference_log import InferenceLog, inference_log_schema, read_inference_log
from kfloop.storage import LocalStorage, S3Storage, Storage
from tests.conftest import demo_config

MODEL = "fraud-detector"


def log_config(workspace: Path | None, **settings: object) -> Config:
    """The demo config with ``serving.inference_log`` overridden (validated like a file)."""
    data = demo_config(workspace).model_dump(mode="json")
    data["serving"]["inference_log"].update(settings)
    return parse_config(data, "test config")


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": MODEL}) or 0.0


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def rows(n: int, tag: str) -> dict[str, object]:
    """``n`` scored rows with entity keys, a request feature, a stored feature and the outputs."""
    return {
        "customer_id": [f"{tag}-c{i}" for i in range(n)],
        "merchant_id": [f"m{i % 3}" for i in range(n)],
        "amount": np.linspace(1.0, 2.0, n),
        "amount_sum_24h": [float(i) for i in range(n)],
        "score": np.full(n, 0.25, dtype=np.float32),
        "label": np.zeros(n, dtype=np.int64),
        "defaulted": np.zeros(n, dtype=bool),
    }


class FlakyStorage(LocalStorage):
    """Real local storage whose writes fail while ``down`` is set, or take ``delay`` seconds."""

    def __init__(self, root: Path, delay: float = 0.0) -> None:
        super().__init__(root)
        self.down = threading.Event()
        self.delay = delay
        self.writing = threading.Event()
        self.attempts = 0

    def write_bytes(self, key: str, data: bytes) -> None:
        self.attempts += 1
        self.writing.set()
        if self.delay:
            time.sleep(self.delay)
        if self.down.is_set():
            raise ConnectionError("storage is down")
        super().write_bytes(key, data)


@pytest.fixture
def opened() -> Iterator[list[InferenceLog]]:
    """Logs a test opens are closed even when it fails (no writer thread outlives its test)."""
    logs: list[InferenceLog] = []
    yield logs
    for log in logs:
        log.close(timeout=5)


def test_concurrent_appends_land_exactly_once(tmp_path: Path) -> None:
    config = log_config(tmp_path, flush_rows=50, flush_seconds=0.05, max_buffer_rows=100_000)
    storage = LocalStorage(tmp_path)
    log = InferenceLog(storage, config)
    expected: Counter[str] = Counter()

    def client(t: int) -> None:
        for j in range(100):
            n = 1 + (j % 3)
            log.append(rows(n, f"t{t}"), model_version="7", request_id=f"t{t}-{j}", protocol="v2")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t, thread in enumerate(threads):
        expected.update({f"t{t}-{j}": 1 + (j % 3) for j in range(100)})
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    table = read_inference_log(storage, config)
    assert table.schema == inference_log_schema(config)
    assert table.num_rows == sum(expected.values())
    assert Counter(table.column("request_id").to_pylist()) == expected
    assert log.buffered_rows == 0
    files = storage.list(f"inference-log/{MODEL}/")
    assert len(files) > 1  # flushed while the clients were running, not only by close()
    assert all(f.split("/")[2].startswith("date=") and f.endswith(".parquet") for f in files)


def test_values_round_trip_with_nulls(tmp_path: Path) -> None:
    config = log_config(tmp_path)
    storage = LocalStorage(tmp_path)
    with InferenceLog(storage, config) as log:
        log.append(
            {
                "customer_id": np.array(["ünïcode-é", None], dtype=object),
                "merchant_id": pd.Series(["m1", "m2"]),
                "amount": np.array([12.5, np.nan]),
                "channel": ["online", None],
                "hour_of_day": np.array([13.0, np.nan]),  # numeric inputs arrive as float64
                "amount_count_24h": [3, None],
                "score": np.array([0.75, 0.125], dtype=np.float32),
                "label": [True, False],
                "defaulted": [False, True],
            },
            model_version="v3",
            request_id="req-1",
            protocol="v1",
        )
    got = read_inference_log(storage, config).to_pylist()
    assert [r["customer_id"] for r in got] == ["ünïcode-é", None]
    assert [r["merchant_id"] for r in got] == ["m1", "m2"]
    assert [r["amount"] for r in got] == [12.5, None]
    assert [r["channel"] for r in got] == ["online", None]
    assert [r["hour_of_day"] for r in got] == [13, None]
    assert [r["amount_count_24h"] for r in got] == [3.0, None]
    assert [r["score"] for r in got] == [0.75, 0.125]
    assert [r["label"] for r in got] == [1, 0]
    assert [r["defaulted"] for r in got] == [False, True]
    assert all(r["merchant_category"] is None and r["seconds_since_previous"] is None for r in got)
    assert {(r["model_version"], r["request_id"], r["protocol"]) for r in got} == {("v3", "req-1", "v1")}
    assert got[0]["timestamp"] == got[1]["timestamp"]  # one timestamp per request
    assert got[0]["timestamp"].tzinfo is not None


def test_caller_changes_after_append_do_not_reach_the_log(tmp_path: Path) -> None:
    config = log_config(tmp_path)
    storage = LocalStorage(tmp_path)
    amounts = np.array([1.0, 2.0])
    with InferenceLog(storage, config) as log:
        log.append({"amount": amounts, "score": [0.1, 0.2]}, model_version="1", request_id="r", protocol="v2")
        amounts[:] = -1
    assert read_inference_log(storage, config).column("amount").to_pylist() == [1.0, 2.0]


def test_flushes_by_rows_without_close(tmp_path: Path, opened: list[InferenceLog]) -> None:
    config = log_config(tmp_path, flush_rows=10, flush_seconds=3600)
    storage = LocalStorage(tmp_path)
    log = InferenceLog(storage, config)
    opened.append(log)
    log.append(rows(10, "a"), model_version="1", request_id="a", protocol="v2")
    wait_until(lambda: read_inference_log(storage, config).num_rows == 10)
    log.append(rows(5, "b"), model_version="1", request_id="b", protocol="v2")
    time.sleep(0.3)
    assert read_inference_log(storage, config).num_rows == 10  # 5 < flush_rows and far from flush_seconds
    assert log.buffered_rows == 5


def test_flushes_by_age_without_close(tmp_path: Path, opened: list[InferenceLog]) -> None:
    config = log_config(tmp_path, flush_rows=1000, flush_seconds=0.2)
    storage = LocalStorage(tmp_path)
    log = InferenceLog(storage, config)
    opened.append(log)
    start = time.monotonic()
    log.append(rows(3, "a"), model_version="1", request_id="a", protocol="v2")
    wait_until(lambda: read_inference_log(storage, config).num_rows == 3, timeout=5)
    assert time.monotonic() - start >= 0.2


def test_bounded_buffer_drops_counts_and_recovers(tmp_path: Path, opened: list[InferenceLog]) -> None:
    config = log_config(tmp_path, flush_rows=5, flush_seconds=0.05, max_buffer_rows=20)
    storage = FlakyStorage(tmp_path)
    storage.down.set()
    log = InferenceLog(storage, config)
    opened.append(log)
    dropped, errors, written = (
        metric(f"kfloop_inference_log_{m}_total") for m in ("dropped_rows", "write_errors", "rows")
    )
    slowest = 0.0
    for i in range(30):
        start = time.perf_counter()
        log.append(rows(1, str(i)), model_version="1", request_id=str(i), protocol="v2")
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 0.05
    assert log.buffered_rows == 20
    assert metric("kfloop_inference_log_dropped_rows_total") - dropped == 10
    wait_until(lambda: metric("kfloop_inference_log_write_errors_total") > errors)
    with pytest.raises(StorageError, match=str(tmp_path)):
        log.flush()  # a synchronous flush says so, and keeps the rows
    assert log.buffered_rows == 20
    storage.down.clear()
    wait_until(lambda: log.buffered_rows == 0)
    table = read_inference_log(storage, config)
    assert table.column("request_id").to_pylist() == [str(i) for i in range(20)]  # the first 20, in order
    assert metric("kfloop_inference_log_rows_total") - written == 20
    assert metric("kfloop_inference_log_dropped_rows_total") - dropped == 10


def test_append_stays_fast_while_a_write_is_slow(tmp_path: Path, opened: list[InferenceLog]) -> None:
    config = log_config(tmp_path, flush_rows=1, flush_seconds=0.05)
    storage = FlakyStorage(tmp_path, delay=1.0)
    log = InferenceLog(storage, config)
    opened.append(log)
    log.append(rows(1, "first"), model_version="1", request_id="first", protocol="v2")
    assert storage.writing.wait(5)  # the writer is inside a 1 s write now
    latencies = []
    for i in range(20):
        start = time.perf_counter()
        log.append(rows(1, str(i)), model_version="1", request_id=str(i), protocol="v2")
        latencies.append(time.perf_counter() - start)
    assert max(latencies) < 0.05, latencies
    log.close()
    assert read_inference_log(storage, config).num_rows == 21


def test_bad_values_drop_their_request_not_the_batch(tmp_path: Path) -> None:
    config = log_config(tmp_path)
    storage = LocalStorage(tmp_path)
    dropped = metric("kfloop_inference_log_dropped_rows_total")
    with InferenceLog(storage, config) as log:
        log.append(rows(2, "good"), model_version="1", request_id="good", protocol="v2")
        log.append({"amount": ["not a number"], "score": [0.5]}, model_version="1", request_id="bad", protocol="v2")
        log.append(rows(1, "also"), model_version="1", request_id="also", protocol="v2")
    assert read_inference_log(storage, config).column("request_id").to_pylist() == ["good", "good", "also"]
    assert metric("kfloop_inference_log_dropped_rows_total") - dropped == 1


def test_append_rejects_caller_bugs(tmp_path: Path) -> None:
    with InferenceLog(LocalStorage(tmp_path), log_config(tmp_path)) as log:
        with pytest.raises(ValueError, match="'nope'"):
            log.append({"nope": [1]}, model_version="1", request_id="r", protocol="v2")
        with pytest.raises(ValueError, match="differ in length"):
            log.append({"amount": [1.0, 2.0], "score": [0.5]}, model_version="1", request_id="r", protocol="v2")
        with pytest.raises(ValueError, match="'timestamp'"):
            log.append({"timestamp": [1]}, model_version="1", request_id="r", protocol="v2")
        with pytest.raises(TypeError, match="'customer_id'"):
            log.append({"customer_id": "c1"}, model_version="1", request_id="r", protocol="v2")
        assert log.buffered_rows == 0


def test_disabled_log_is_a_no_op(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    config = log_config(tmp_path, enabled=False)
    with InferenceLog(storage, config) as log:
        log.append(rows(3, "a"), model_version="1", request_id="a", protocol="v2")
        assert log.buffered_rows == 0
        log.flush()
    assert storage.list("inference-log/") == []
    assert not any(t.name.startswith("inference-log-") for t in threading.enumerate() if t.is_alive())


def test_close_is_idempotent_and_later_rows_are_counted_as_dropped(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    config = log_config(tmp_path, flush_seconds=3600)
    log = InferenceLog(storage, config)
    log.append(rows(2, "a"), model_version="1", request_id="a", protocol="v2")
    log.close()
    log.close()
    dropped = metric("kfloop_inference_log_dropped_rows_total")
    log.append(rows(1, "late"), model_version="1", request_id="late", protocol="v2")
    assert metric("kfloop_inference_log_dropped_rows_total") - dropped == 1
    assert read_inference_log(storage, config).column("request_id").to_pylist() == ["a", "a"]


def test_rows_go_to_their_date_partition_and_reads_filter_by_time(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    config = log_config(tmp_path, flush_seconds=3600)
    times = iter([datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC), datetime(2024, 1, 2, 0, 0, 1, tzinfo=UTC)])
    now = datetime(2024, 1, 2, 0, 0, 2, tzinfo=UTC)
    with InferenceLog(storage, config, clock=lambda: next(times, now)) as log:
        log.append(rows(1, "a"), model_version="1", request_id="before", protocol="v2")
        log.append(rows(2, "b"), model_version="1", request_id="after", protocol="v2")
    keys = storage.list("inference-log/")
    assert [k.split("/")[2] for k in keys] == ["date=2024-01-01", "date=2024-01-02"]  # one flush, split by date
    midnight = datetime(2024, 1, 2, tzinfo=UTC)

    def ids(**window: datetime) -> list[str]:
        return read_inference_log(storage, config, **window).column("request_id").to_pylist()

    assert ids() == ["before", "after", "after"]
    assert ids(since=midnight) == ["after", "after"]
    assert ids(until=midnight) == ["before"]
    assert ids(since=midnight.replace(tzinfo=None) + timedelta(seconds=2)) == []  # naive is UTC
    empty = read_inference_log(LocalStorage(tmp_path / "none"), config)
    assert empty.num_rows == 0 and empty.schema == inference_log_schema(config)


def test_schema_follows_the_config(tmp_path: Path) -> None:
    config = log_config(tmp_path)
    schema = inference_log_schema(config)
    features = config.features.feature_names()
    assert schema.names == [
        "timestamp",
        "request_id",
        "model_version",
        "protocol",
        *config.source.entity_keys,
        *config.features.request_features,
        *features,
        "score",
        "label",
        "defaulted",
        "violations",
    ]
    assert schema.field("hour_of_day").type == pa.int64() and schema.field("channel").type == pa.string()
    assert all(schema.field(f).type == pa.float64() for f in features)


def test_a_second_import_reuses_the_registered_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("serving_inference_log_again", inference_log.__file__)
    assert spec is not None and spec.loader is not None
    again = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, again)
    spec.loader.exec_module(again)  # would raise "Duplicated timeseries" without the guard
    assert again.ROWS_DROPPED is inference_log.ROWS_DROPPED


@pytest.mark.s3
def test_writes_and_reads_through_s3(s3_storage: S3Storage) -> None:
    config = log_config(None, flush_rows=4, flush_seconds=3600)
    storage: Storage = s3_storage
    with InferenceLog(storage, config) as log:
        for i in range(2):
            log.append(rows(2, str(i)), model_version="1", request_id=str(i), protocol="grpc-v2")
        wait_until(lambda: len(storage.list(f"inference-log/{MODEL}/")) == 1)  # 4 rows = flush_rows
        log.append(rows(2, "2"), model_version="1", request_id="2", protocol="grpc-v2")
    keys = storage.list(f"inference-log/{MODEL}/")
    assert len(keys) == 2  # the second by close()
    assert storage.uri(keys[0]).startswith(f"s3://{s3_storage.bucket}/ws/inference-log/{MODEL}/date=")
    table = read_inference_log(storage, config)
    assert table.column("request_id").to_pylist() == ["0", "0", "1", "1", "2", "2"]
    assert table.schema == inference_log_schema(config)


class HangingStorage(LocalStorage):
    """Real local storage whose writes block until ``release`` is set (a hung S3 endpoint)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.writing = threading.Event()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.writing.set()
        self.release.wait()
        super().write_bytes(key, data)


def test_close_gives_up_at_the_shutdown_bound_and_counts_the_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = log_config(tmp_path, flush_rows=5, flush_seconds=0.05, shutdown_timeout_seconds=1.0)
    storage = HangingStorage(tmp_path)
    log = InferenceLog(storage, config)
    dropped = metric("kfloop_inference_log_dropped_rows_total")
    try:
        log.append(rows(5, "a"), model_version="1", request_id="a", protocol="v2")
        assert storage.writing.wait(10)  # the writer is stuck in storage now
        log.append(rows(3, "b"), model_version="1", request_id="b", protocol="v2")
        start = time.monotonic()
        log.close()
        took = time.monotonic() - start
    finally:
        storage.release.set()
    assert 0.9 <= took < 3.0, took
    assert metric("kfloop_inference_log_dropped_rows_total") - dropped == 8
    assert "8 rows lost" in caplog.text and "1 s" in caplog.text


_SIGTERM_SCRIPT = """
import signal, sys, threading, time
from pathlib import Path
from kfloop.config import config_from_json
from kfloop.serving.inference_log import InferenceLog
from kfloop.storage import LocalStorage
from tests.serving.test_inference_log import rows

class Hung(LocalStorage):
    def write_bytes(self, key, data):
        threading.Event().wait()

config = config_from_json(Path(sys.argv[3]).read_text())
root = Path(sys.argv[1])
log = InferenceLog(Hung(root) if sys.argv[2] == "hung" else LocalStorage(root), config)
def stop(signum, frame):
    log.close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
log.append(rows(7, "t"), model_version="1", request_id="t", protocol="v1")
print("appended", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("storage", ["ok", "hung"])
def test_sigterm_writes_the_buffer_or_gives_up_within_the_bound(tmp_path: Path, storage: str) -> None:
    from kfloop.config import config_to_json

    # a bound the encoder process's start fits in on a loaded 2-core machine (at 1.5 s a busy suite lost the rows)
    config = log_config(tmp_path, flush_seconds=3600, shutdown_timeout_seconds=3.0)
    (tmp_path / "config.json").write_text(config_to_json(config))
    root = Path(__file__).resolve().parents[2]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGTERM_SCRIPT, str(tmp_path), storage, str(tmp_path / "config.json")],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "appended"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        took = time.monotonic() - start
    finally:
        proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, err
    written = read_inference_log(LocalStorage(tmp_path), config).num_rows
    if storage == "ok":
        assert written == 7 and took < 8, (took, err)
    else:  # 3 s bound, then the rows are reported lost and the process exits
        assert written == 0 and 2.9 <= took < 8, (took, err)
        assert "7 rows lost" in err


class WhoWrites(LocalStorage):
    """Records which thread writes (the log's writer thread, never the caller's)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.threads: set[str] = set()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.threads.add(threading.current_thread().name)
        super().write_bytes(key, data)


def test_encoding_runs_in_the_encoder_process_not_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfloop.serving import _log_encoder

    def not_here(*args: object) -> None:
        raise AssertionError("the serving process encoded the log itself")

    monkeypatch.setattr(_log_encoder, "encode", not_here)
    monkeypatch.setattr(_log_encoder, "_table", not_here)
    config = log_config(tmp_path, flush_rows=10, flush_seconds=0.05)
    storage = WhoWrites(tmp_path)
    with InferenceLog(storage, config) as log:
        for i in range(25):
            log.append(rows(1, str(i)), model_version="1", request_id=str(i), protocol="v1")
        log.flush()
    assert read_inference_log(storage, config).num_rows == 25
    assert storage.threads <= {"MainThread", f"inference-log-{MODEL}"}, storage.threads


def test_append_stays_fast_while_a_big_batch_is_encoded(tmp_path: Path, opened: list[InferenceLog]) -> None:
    """A flush of 100k rows takes the encoder process about a second; appends meanwhile take microseconds.
    The bound is generous (shared CI cores); before the encoder process, such a flush held the GIL."""
    config = log_config(tmp_path, flush_rows=100_000, max_buffer_rows=200_000, flush_seconds=3600)
    storage = FlakyStorage(tmp_path)
    log = InferenceLog(storage, config)
    opened.append(log)
    big = rows(100_000, "big")
    log.append(big, model_version="1", request_id="big", protocol="v1")  # = flush_rows: the writer starts
    latencies = []
    deadline = time.monotonic() + 30
    while not storage.writing.is_set() and time.monotonic() < deadline:
        start = time.perf_counter()
        log.append(rows(1, "small"), model_version="1", request_id="small", protocol="v1")
        latencies.append(time.perf_counter() - start)
        time.sleep(0.001)
    assert storage.writing.is_set(), "the big batch was not written within 30 s"
    assert len(latencies) > 50  # appends ran while the batch was being encoded
    assert sorted(latencies)[len(latencies) // 2] < 0.002 and max(latencies) < 0.1, (
        sorted(latencies)[-5:],
        len(latencies),
    )
    log.close()
    assert read_inference_log(storage, config).num_rows == 100_000 + len(latencies)


def test_a_dead_encoder_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    config = log_config(tmp_path, flush_seconds=3600)
    storage = LocalStorage(tmp_path)
    with InferenceLog(storage, config) as log:
        log.append(rows(2, "a"), model_version="1", request_id="a", protocol="v1")
        log.flush()
        proc = log._encoder._proc
        assert proc is not None
        proc.kill()
        proc.wait()
        log.append(rows(3, "b"), model_version="1", request_id="b", protocol="v1")
        log.flush()
    assert read_inference_log(storage, config).column("request_id").to_pylist() == ["a"] * 2 + ["b"] * 3


_HALF_ANSWER = """
import os, sys
def read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
for _ in range(2):  # the schema, then one batch
    read(int.from_bytes(read(8), "big"))
os.write(1, (100).to_bytes(8, "big"))  # the answer's header, then the process dies
"""


def test_an_encoder_dying_inside_its_answer_keeps_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between an answer's header and its payload (``kill -9`` mid-traffic), the encoder used to
    hand back an empty answer: the batch vanished uncounted and its rows stayed "held" forever."""
    from kfloop.serving import _log_encoder

    fake = tmp_path / "half_answer.py"
    fake.write_text(_HALF_ANSWER)
    monkeypatch.setattr(_log_encoder, "__file__", str(fake))
    config = log_config(tmp_path, flush_seconds=3600)
    storage = LocalStorage(tmp_path)
    with InferenceLog(storage, config) as log:
        log.append(rows(4, "a"), model_version="1", request_id="a", protocol="v1")
        with pytest.raises(StorageError, match="inside a frame"):
            log.flush()
        assert log.buffered_rows == 4
        monkeypatch.undo()  # the real encoder from the next start on
        log.flush()
        assert log.buffered_rows == 0
    assert read_inference_log(storage, config).column("request_id").to_pylist() == ["a"] * 4


def test_a_backlog_is_encoded_in_bounded_chunks_and_a_failed_chunk_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog went to the encoder process as one batch: 200k one-row requests (max_buffer_rows) took it
    to 1 GB, beside the server in the transformer's 1 GiB container. Now chunks of ENCODE_MAX_ROWS rows."""
    from kfloop.errors import EncoderError
    from kfloop.serving._log_encoder import Encoder

    monkeypatch.setattr(inference_log, "ENCODE_MAX_ROWS", 10)
    sizes: list[int] = []
    real = Encoder.encode

    def encode(self: Encoder, batch: list[bytes], timeout: float) -> object:
        sizes.append(len(batch))
        if len(sizes) == 2:
            raise EncoderError("killed (test)")
        return real(self, batch, timeout)

    monkeypatch.setattr(Encoder, "encode", encode)
    config = log_config(tmp_path, flush_seconds=3600)
    storage = LocalStorage(tmp_path)
    with InferenceLog(storage, config) as log:
        for i in range(7):  # 7 requests of 4 rows: chunks of 2 requests (8 rows ≤ 10)
            log.append(rows(4, str(i)), model_version="1", request_id=str(i), protocol="v1")
        with pytest.raises(StorageError):
            log.flush()  # the first chunk is encoded, the second fails: it and the rest go back
        assert sizes == [2, 2] and log.buffered_rows == 28
        log.flush()
        assert sizes == [2, 2, 2, 2, 1] and log.buffered_rows == 0
    ids = read_inference_log(storage, config).column("request_id").to_pylist()
    assert sorted(Counter(ids).items()) == [(str(i), 4) for i in range(7)]
