"""The champion watch in-process, on a real registry whose storage fails on demand: a transient storage
error is retried (with a bounded backoff) and the switch happens once storage recovers; a corrupt version
or one whose inputs do not match the config is refused once (metric + one log line), the served version
keeps serving, and a refused version is tried again only after the champion moved away and back.
Also: which lookup errors mark the online store down, and the contract's allowed values on requests."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.exceptions
from prometheus_client import REGISTRY

from kfloop.config import Config, parse_config
from kfloop.errors import NotReadyError, OnlineStoreUnavailableError, StorageError
from kfloop.registry import ModelRegistry
from kfloop.serving import champion as champion_module
from kfloop.serving import protocol
from kfloop.serving.champion import ChampionWatch, input_mismatch
from kfloop.serving.predictor import Predictor
from kfloop.serving.request_contract import CategoryGuard
from kfloop.serving.server import _per_request_lines
from kfloop.serving.transformer import Transformer, store_unreachable
from kfloop.storage import LocalStorage
from tests.serving.conftest import Trained

pytestmark = pytest.mark.slow


class FlakyStorage:
    """A LocalStorage whose downloads fail with a StorageError (an S3 endpoint down) while ``down``."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalStorage(root)
        self.down = False
        self.downloads = 0

    def download_file(self, key: str, local_path: Path) -> None:
        self.downloads += 1
        if self.down:
            raise StorageError(f"{self.inner.uri(key)}: S3 endpoint unreachable (test)")
        self.inner.download_file(key, local_path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _copy_version(trained: Trained, registry: ModelRegistry, **card: object) -> str:
    source = ModelRegistry(trained.loop.storage, trained.config.training.model_name)
    with tempfile.TemporaryDirectory() as tmp:
        source.fetch(trained.champion, Path(tmp))
        base = {
            k: v for k, v in source.get(trained.champion).card.items() if k not in ("files", "version", "registered")
        }
        return registry.register(Path(tmp), {**base, **card}).version


def _config(trained: Trained, **serving: object) -> Config:
    data = trained.config.model_dump(mode="json")
    data["serving"].update(serving)
    return parse_config(data, "test")


def _watch(trained: Trained, tmp_path: Path, config: Config | None = None) -> tuple[ChampionWatch, FlakyStorage]:
    storage = FlakyStorage(tmp_path / "ws")
    name = trained.config.training.model_name
    registry = ModelRegistry(storage, name)  # type: ignore[arg-type]
    registry.promote(_copy_version(trained, registry), "start")
    predictor = Predictor(name + "-predictor", tmp_path / "pending", max_rows=100)
    (tmp_path / "work").mkdir(parents=True)
    return ChampionWatch(config or trained.config, registry, predictor, tmp_path / "work", None), storage


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_transient_storage_error_is_retried_and_the_switch_follows_recovery(trained: Trained, tmp_path: Path) -> None:
    watch, storage = _watch(trained, tmp_path)
    watch.start()
    first = watch.predictor.version
    new = _copy_version(trained, watch.registry, threshold=0.0)
    watch.registry.promote(new, "next")
    storage.down = True
    for _ in range(3):
        with pytest.raises(StorageError):
            watch.check_now()
    assert watch.predictor.version == first and not watch.refused, "still serving the old one, nothing refused"
    storage.down = False
    watch.check_now()
    assert watch.predictor.version == new
    model = watch.config.training.model_name
    assert _metric("kfloop_model_refused_total", model=model, version=new, reason="corrupt") == 0


def test_the_background_loop_backs_off_after_transient_errors_up_to_the_cap(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(trained, reload_seconds=0.5, reload_max_seconds=3.0)
    watch, storage = _watch(trained, tmp_path, config)
    watch.start()
    watch.registry.promote(_copy_version(trained, watch.registry), "next")
    storage.down = True
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 7:
            storage.down = False  # recovers: the next check switches and the delay resets
        if len(delays) == 9:
            raise asyncio.CancelledError

    monkeypatch.setattr(champion_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watch.run())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 0.5, 0.5]
    assert watch.predictor.version == watch.registry.champion().version


def test_a_corrupt_champion_is_refused_once_and_retried_only_after_it_comes_back(
    trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch, storage = _watch(trained, tmp_path)
    watch.start()
    first = watch.predictor.version
    bad = _copy_version(trained, watch.registry)
    watch.registry.promote(bad, "to be corrupted")
    folder = tmp_path / "ws" / "registry" / trained.config.training.model_name / bad
    model_file = max((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    original = model_file.read_bytes()
    model_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))

    with caplog.at_level(logging.ERROR):
        watch.check_now()
        fetched = storage.downloads
        watch.check_now()  # refused: not fetched again
    assert storage.downloads == fetched
    assert watch.predictor.version == first and "corrupt" in watch.refused[bad]
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert (
        len(lines) == 1 and bad in lines[0] and "checksum mismatch" in lines[0] and f"still serving {first}" in lines[0]
    )
    name = watch.config.training.model_name
    assert _metric("kfloop_model_refused_total", model=name, version=bad, reason="corrupt") == 1

    model_file.write_bytes(original)  # repaired: not retried while it stays the champion…
    watch.check_now()
    assert watch.predictor.version == first
    watch.registry.promote(first, "away")  # …but after the champion moved away and back
    watch.check_now()
    watch.registry.promote(bad, "back")
    watch.check_now()
    assert watch.predictor.version == bad


def test_inputs_that_do_not_match_the_config_are_refused_and_explained(trained: Trained, tmp_path: Path) -> None:
    data = trained.config.model_dump(mode="json")
    data["features"]["request_features"] = [c for c in data["features"]["request_features"] if c != "channel"]
    fewer = parse_config(data, "test")
    watch, _ = _watch(trained, tmp_path, fewer)
    watch.start()
    assert watch.predictor.model is None
    reason = watch.predictor.not_ready_reason
    assert "inputs do not match the config" in reason and "channel" in reason and "refused (inputs)" in reason
    with pytest.raises(NotReadyError, match="channel"):
        asyncio.run(watch.predictor.healthy())

    # at a switch: the served version stays, the other one is refused
    watch2, _ = _watch(trained, tmp_path / "second")
    watch2.start()
    served = watch2.predictor.version
    other = _copy_version(trained, watch2.registry, feature_service={"name": "other_features", "version": "x"})
    watch2.registry.promote(other, "trained on another service")
    watch2.check_now()
    assert watch2.predictor.version == served and "other_features" in watch2.refused[other]
    assert input_mismatch(trained.config, watch2.predictor.model) is None


def test_a_model_trained_under_short_names_is_refused_under_full_names(trained: Trained, tmp_path: Path) -> None:
    data = trained.config.model_dump(mode="json")
    data["features"]["naming"] = "full"
    watch, _ = _watch(trained, tmp_path, parse_config(data, "test"))
    watch.start()
    assert watch.predictor.model is None
    reason = watch.predictor.not_ready_reason
    first = trained.config.features.feature_names()[0]
    assert "trained with features.naming: short" in reason and "the config has features.naming: full" in reason
    assert f"inputs such as {first}" in reason and f"customer_activity__{first}" in reason
    assert "retrain" in reason and "set features.naming: short" in reason and "refused (inputs)" in reason


def test_only_unreachable_store_errors_mark_the_store_down() -> None:
    unreachable = [
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("no answer"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("unable to open database file"),
    ]
    answered = [
        sqlite3.OperationalError("no such table: fraud_customer_activity"),
        ValueError("bad value"),
        KeyError("amount_sum_1h"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ]
    assert all(store_unreachable(e) for e in unreachable)
    assert not any(store_unreachable(e) for e in answered)


class _Lookup:
    """A lookup whose store refuses connections while ``error`` is set."""

    join_keys = ("customer_id",)

    def __init__(self) -> None:
        self.error: Exception | None = ConnectionRefusedError(111, "refused")

    def get(self, keys: dict) -> dict:
        if self.error is not None:
            raise self.error
        return {}


def test_an_outage_is_logged_once_and_answers_meanwhile_leave_no_tracebacks(
    trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    """KServe logs a traceback for every 503 (each request, each readiness probe) during an outage or while
    not ready: the log says it once when the store goes down and once when it is back."""
    lookup = _Lookup()
    transformer = Transformer(trained.config, lookup, predictor=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        assert not any(transformer.probe_store() for _ in range(3))
        lookup.error = None
        assert transformer.probe_store()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("online store unreachable (ConnectionRefusedError" in m for m in messages) == 1, messages
    assert sum("online store reachable again" in m for m in messages) == 1, messages
    for err in (NotReadyError("m", "refused"), OnlineStoreUnavailableError("down")):
        record = logging.LogRecord("kserve", logging.ERROR, __file__, 1, "Exception:", (), (type(err), err, None))
        assert not _per_request_lines(record)
    internal = RuntimeError("a bug")
    record = logging.LogRecord("kserve", logging.ERROR, __file__, 1, "Exception:", (), (RuntimeError, internal, None))
    assert _per_request_lines(record)


def test_the_contracts_allowed_values_reject_or_flag_request_rows(trained: Trained) -> None:
    specs = protocol.request_specs(trained.config)
    columns = {
        "channel": np.array(["pos", "carrier-pigeon", None], dtype=object),
        "merchant_category": np.array(["grocery", "grocery", "casino"], dtype=object),
    }
    reject = CategoryGuard(trained.config, specs)
    assert {c.check for c in reject.checks} == {"channel.allowed", "merchant_category.allowed"}
    with pytest.raises(protocol.RequestError) as err:
        reject.violations({**columns, "merchant_category": columns["merchant_category"][[0, 0, 0]]}, 3, "v1")
    message = str(err.value)
    assert message.startswith("instances[1].channel: 'carrier-pigeon' is not allowed by the data contract")
    assert "'pos', 'online', 'atm'" in message
    with pytest.raises(protocol.RequestError, match=r"input 'merchant_category'\[2\]: 'casino'"):
        reject.violations(columns, 3, "grpc")

    flag = CategoryGuard(_config(trained, unknown_category="flag"), specs)
    flagged = flag.violations(columns, 3, "v2")
    assert flagged.tolist() == ["", "channel.allowed", "merchant_category.allowed"]  # null is not a violation
