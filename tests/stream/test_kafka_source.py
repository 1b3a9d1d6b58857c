"""The Kafka source through the worker's one interface. No Kafka broker can run on this machine (no package), so
these tests stand in a small in-memory broker for confluent-kafka's Consumer (subscribe / consume / commit /
close, offsets from the last commit on a new consumer): what is tested is kfloop's side (offsets committed only
after the archive, re-delivery after a crash changes nothing, settings from config), not librdkafka. The Redis
Streams path runs against a real redis-server in the other tests of this folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from kfloop import lake
from kfloop.errors import ConfigError
from kfloop.feature_repo.store import open_store
from kfloop.storage.local import LocalStorage
from kfloop.stream.kafka import KafkaSource
from kfloop.stream.state import RedisHistories
from kfloop.stream.worker import StreamWorker
from tests.feature_repo.harness import demo_frames, feature_config, sqlite_backend
from tests.stream.test_stream_batch_equality import _records


@dataclass
class _Broker:
    """One topic, one partition, the group's committed offset."""

    values: list[bytes]
    committed: int = 0
    commits: list[int] = field(default_factory=list)


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self):
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class _Consumer:
    """confluent_kafka.Consumer's calls the source makes, over :class:`_Broker`."""

    def __init__(self, broker: _Broker) -> None:
        self.broker, self.position = broker, broker.committed

    def subscribe(self, topics: list[str]) -> None:
        assert topics == ["transactions"]

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        start, end = self.position, min(self.position + num_messages, len(self.broker.values))
        self.position = end
        return [_Message(i, self.broker.values[i]) for i in range(start, end)]

    def commit(self, offsets: list, asynchronous: bool) -> None:
        assert asynchronous is False
        ((topic, partition, offset),) = [(o.topic, o.partition, o.offset) for o in offsets]
        assert topic == "transactions" and partition == 0 and offset <= self.position
        self.broker.committed = offset
        self.broker.commits.append(offset)

    def close(self) -> None:
        pass


def _config(workspace: Path, server):
    def edit(data: dict) -> None:
        data["stream"] = {
            "source": "kafka",
            "kafka": {
                "bootstrap_servers": "${KAFKA_BOOTSTRAP_SERVERS}",
                "topic": "transactions",
                "options": {"security.protocol": "SASL_SSL", "sasl.password": "${KAFKA_PASSWORD}"},
            },
            "redis": {"url": f"redis://{server.address}/0", "claim_idle": "1h"},
            "batch_size": 100,
            "archive_rows": 250,
        }

    return feature_config(workspace, sqlite_backend(), edit)


def test_settings_from_config_with_secrets_from_the_environment(tmp_path: Path, redis_server) -> None:
    config = _config(tmp_path / "ws", redis_server)
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093", "KAFKA_PASSWORD": "s3cret"}
    settings = KafkaSource.settings(config, env)
    assert settings["bootstrap.servers"] == "b1:9093,b2:9093" and settings["sasl.password"] == "s3cret"
    assert settings["enable.auto.commit"] == "false" and settings["group.id"] == "kfloop-features"
    with pytest.raises(ConfigError, match="KAFKA_PASSWORD is not set"):
        KafkaSource.settings(config, {"KAFKA_BOOTSTRAP_SERVERS": "b1:9093"})


def test_offsets_commit_after_the_archive_and_a_crash_loses_and_doubles_nothing(tmp_path: Path, redis_server) -> None:
    redis_server.flush()
    workspace = tmp_path / "ws"
    config = _config(workspace, redis_server)
    storage = LocalStorage(workspace)
    records = _records(demo_frames(rows=600, seed=9, cut_day=90)[0])
    broker = _Broker([orjson.dumps(r) for r in records])

    def worker() -> StreamWorker:
        histories = RedisHistories(redis_server.client(), config.project)
        return StreamWorker(
            config, storage, KafkaSource(_Consumer(broker), "transactions"), histories, open_store(config, storage, {})
        )

    first = worker()
    for _ in range(4):  # 400 records: one archive at 250 (then a commit), 150 read and never archived
        first.process(first.source.read(100, 0.1))
        if first.archive_due():
            first.flush()
    assert broker.commits == [300] and broker.committed == 300  # the archive ran after the third batch
    # the worker dies here: nothing more is archived or committed; a new one starts from offset 300
    stats = worker().run(until_idle=True)
    assert stats.records == len(records) - 300 and broker.committed == len(records)
    manifest = lake.read_manifest(storage, config.source.dataset)
    ids = [
        t for tbl in lake.iter_dataset(storage, manifest, 10_000, ["transaction_id"]) for t in tbl.column(0).to_pylist()
    ]
    assert sorted(ids) == sorted(r["transaction_id"] for r in records)
    applied = RedisHistories(redis_server.client(), config.project)
    assert applied.entities(config.features.views[0].name) > 0
