"""Kafka as the event source, through confluent-kafka (librdkafka): the same interface as the Redis stream.

Offsets are committed by hand, synchronously, only when the worker commits (after the records read so far are
archived), so a worker that dies re-reads them: at-least-once, as with Redis, and the event ids dedupe. A record
the broker marks as an error is skipped with its reason logged; a fatal client error stops the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kfloop.config import Config
from kfloop.errors import ConfigError, StorageError
from kfloop.stream.events import Message
from kfloop.stream.sources import consumer_name, resolve

log = logging.getLogger(__name__)


class KafkaSource:
    """A Kafka topic read by a consumer group; ``consumer`` is a ``confluent_kafka.Consumer`` (or the same API)."""

    def __init__(self, consumer: Any, topic: str) -> None:
        self.consumer, self.topic = consumer, topic
        self._positions: dict[int, int] = {}  # partition → offset after the last record read
        self._committed: dict[int, int] = {}
        consumer.subscribe([topic])

    @staticmethod
    def settings(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
        """The librdkafka settings of the configured topic (placeholders resolved)."""
        kafka = config.stream.kafka if config.stream else None
        if kafka is None:
            raise ConfigError(
                "stream.source is kafka but stream.kafka is not set: give its bootstrap_servers and topic"
            )
        out = {
            "bootstrap.servers": resolve(kafka.bootstrap_servers, environ, "stream.kafka.bootstrap_servers"),
            "group.id": kafka.group_id,
            "client.id": consumer_name(),
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
        }
        for name, value in kafka.options.items():
            out[name] = resolve(value, environ, f"stream.kafka.options.{name}")
        return out

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str]) -> KafkaSource:
        try:
            from confluent_kafka import Consumer
        except ImportError as err:
            raise ConfigError(
                "stream.source is kafka, but confluent-kafka is not installed: pip install 'kfloop[kafka]'"
            ) from err
        settings = cls.settings(config, environ)
        try:
            consumer = Consumer(settings)
        except Exception as err:  # confluent_kafka.KafkaException: a bad setting
            raise ConfigError(f"stream.kafka: {err}") from err
        return cls(consumer, config.stream.kafka.topic)

    def read(self, count: int, block_s: float) -> list[Message]:
        out = []
        for msg in self.consumer.consume(num_messages=count, timeout=block_s):
            error = msg.error()
            if error is not None:
                if getattr(error, "fatal", lambda: False)():
                    raise StorageError(f"kafka topic {self.topic}: {error}")
                log.warning("kafka topic %s: %s", self.topic, error)
                continue
            self._positions[msg.partition()] = msg.offset() + 1
            out.append(Message(f"{msg.partition()}:{msg.offset()}", msg.value() or b""))
        return out

    def mark(self) -> dict[int, int]:
        return dict(self._positions)

    def commit(self, mark: object | None = None) -> None:
        """Commit the offsets after the records up to ``mark`` (the group restarts from there)."""
        from confluent_kafka import TopicPartition

        upto = dict(self._positions if mark is None else mark)  # type: ignore[call-overload]
        moved = {p: o for p, o in upto.items() if self._committed.get(p) != o}
        if moved:
            offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(moved.items())]
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self._committed.update(moved)

    def backlog(self) -> int | None:
        return None

    def close(self) -> None:
        self.consumer.close()
