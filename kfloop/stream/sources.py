"""Where events come from: one interface, Redis Streams (embedded default) and Kafka (:mod:`kfloop.stream.kafka`).

Both are consumer groups with at-least-once delivery: ``read`` hands out records, ``commit`` acknowledges every
record handed out so far, and the worker commits only after those records are in the lake (or set aside). A worker
that dies leaves its records unacknowledged; they are delivered again, to it on restart or to another worker of the
group, and the event ids make the second delivery change nothing.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

import orjson
import redis

from kfloop.config import Config
from kfloop.config.contract import parse_duration
from kfloop.errors import ConfigError, StorageError
from kfloop.stream.events import Message

#: The field of a Redis stream entry holding the event (JSON).
EVENT_FIELD = b"event"
_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def resolve(text: str, environ: Mapping[str, str], where: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` placeholders filled from ``environ``; a missing one is named."""

    def fill(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _PLACEHOLDER.sub(fill, text)


def consumer_name() -> str:
    """This worker's name in the group: stable across restarts of one pod or process host (its pending records
    come back to it), distinct between replicas."""
    return os.environ.get("KFLOOP_STREAM_CONSUMER") or socket.gethostname()


class EventSource(Protocol):
    """A consumer group's view of the stream."""

    def read(self, count: int, block_s: float) -> list[Message]:
        """Up to ``count`` records, waiting up to ``block_s`` for the first; first this consumer's own
        unacknowledged ones (after a restart), then records idle too long with a dead consumer, then new ones."""

    def mark(self) -> object:
        """A position covering every record ``read`` returned so far (acknowledged later by :meth:`commit`)."""

    def commit(self, mark: object | None = None) -> None:
        """Acknowledge the records up to ``mark`` (None: every record ``read`` returned so far)."""

    def backlog(self) -> int | None:
        """Records not yet delivered to the group (None: unknown)."""

    def close(self) -> None: ...


def redis_client(config: Config, environ: Mapping[str, str] | None = None) -> redis.Redis:
    """The Redis server of the stream (and of the worker's state)."""
    stream = config.stream
    if stream is None:
        raise ConfigError("no `stream:` section in the config: add one to read events from a stream")
    url = resolve(stream.redis.url, os.environ if environ is None else environ, "stream.redis.url")
    try:
        return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30)
    except ValueError as err:
        raise ConfigError(f"stream.redis.url: {err}") from err


class RedisStreamSource:
    """A Redis stream read through a consumer group (XREADGROUP / XACK / XAUTOCLAIM)."""

    def __init__(self, client: redis.Redis, key: str, group: str, consumer: str, claim_idle_s: float) -> None:
        self.client, self.key, self.group, self.consumer = client, key, group, consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self._own_pending = True  # after a start, this consumer's unacknowledged records come first
        self._pending_from: bytes | str = "0"
        self._claim_from = "0-0"
        self._unacked: list[bytes] = []
        try:
            client.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise StorageError(f"redis stream {key}: cannot create consumer group {group}: {err}") from err
        except redis.RedisError as err:
            raise StorageError(f"redis stream {key}: {type(err).__name__}: {err}") from err

    def _entries(self, entries: Sequence) -> list[Message]:
        out = []
        for entry_id, fields in entries:
            if fields is None:  # deleted (trimmed) while pending: nothing to deliver, only to acknowledge
                self._unacked.append(entry_id)
                continue
            self._unacked.append(entry_id)
            out.append(Message(entry_id.decode(), fields.get(EVENT_FIELD, b"")))
        return out

    def read(self, count: int, block_s: float) -> list[Message]:
        if self._own_pending:  # from the last one handed out: they stay pending until the next commit
            got = self.client.xreadgroup(self.group, self.consumer, {self.key: self._pending_from}, count=count)
            entries = got[0][1] if got else []
            if len(entries) < count:
                self._own_pending = False
            if entries:
                self._pending_from = entries[-1][0]
                return self._entries(entries)
        claimed = self.client.xautoclaim(
            self.key, self.group, self.consumer, self.claim_idle_ms, start_id=self._claim_from, count=count
        )
        self._claim_from = claimed[0] if claimed[0] else "0-0"
        if claimed[1]:
            return self._entries(claimed[1])
        got = self.client.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=count, block=max(1, int(block_s * 1000))
        )
        return self._entries(got[0][1]) if got else []

    def mark(self) -> int:
        return len(self._unacked)

    def commit(self, mark: object | None = None) -> None:
        upto = len(self._unacked) if mark is None else int(mark)  # one commit at a time: indexes stay valid
        if upto:
            self.client.xack(self.key, self.group, *self._unacked[:upto])
            self._unacked = self._unacked[upto:]

    def backlog(self) -> int | None:
        for g in self.client.xinfo_groups(self.key):
            if g["name"].decode() == self.group:
                lag = g.get("lag")
                return int(lag) if lag is not None else None
        return None

    def close(self) -> None:
        self.client.close()


def open_source(config: Config, environ: Mapping[str, str] | None = None) -> EventSource:
    """The configured source for this worker."""
    stream = config.stream
    if stream is None:
        raise ConfigError("no `stream:` section in the config: add one to read events from a stream")
    env = os.environ if environ is None else environ
    if stream.source == "kafka":
        from kfloop.stream.kafka import KafkaSource

        return KafkaSource.from_config(config, env)
    return RedisStreamSource(
        redis_client(config, env),
        stream.stream_key(config.project),
        stream.redis.group,
        consumer_name(),
        parse_duration(stream.redis.claim_idle).total_seconds(),
    )


def send_events(config: Config, records: Sequence[dict | bytes], environ: Mapping[str, str] | None = None) -> int:
    """Append events to the configured Redis stream (``kfloop stream send``, tests, benchmarks): one entry per
    record, the record as JSON in the ``event`` field. Kafka producers are the user's own applications."""
    stream = config.stream
    if stream is None or stream.source != "redis":
        raise ConfigError("kfloop stream send writes to a Redis stream: set stream.source: redis")
    client = redis_client(config, environ)
    key, cap = stream.stream_key(config.project), stream.redis.max_length
    pipe = client.pipeline(transaction=False)
    for i, rec in enumerate(records):
        body = rec if isinstance(rec, bytes) else orjson.dumps(rec, default=str)
        pipe.xadd(key, {EVENT_FIELD: body}, maxlen=cap, approximate=True)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return len(records)
