"""The ``stream`` section: events read from a stream update the online features within seconds.

`kfloop stream run` reads source records from Redis Streams (the embedded default; a consumer group,
at-least-once) or Kafka (clusters), checks them with the same cast and contract as ingest and validate, updates
the rolling aggregates of ``features.views`` per entity with the batch stage's engine, writes the newest row of
every touched entity through Feast's online store interface, and archives the accepted records into the raw lake
dataset, so the next batch run computes the same values from the same events. A record is acknowledged only once
it is in the lake (or quarantined with its reason).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration
from kfloop.config.storage import SecretRef

StreamKind = Literal["redis", "kafka"]


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class RedisStreamSource(Section):
    """A Redis stream read through a consumer group (XREADGROUP, XACK; pending records of a dead consumer are
    claimed with XAUTOCLAIM). Each record carries one event as JSON in the field ``event``."""

    url: str = Field(
        "${KFLOOP_STREAM_REDIS_URL:-redis://localhost:6379/0}",
        description="redis:// URL of the server holding the stream (and the worker's per-entity state); "
        "`${VAR}` / `${VAR:-default}` placeholders are resolved from the environment.",
    )
    secret: SecretRef | None = Field(
        SecretRef(env="KFLOOP_STREAM_REDIS_URL", secret_name="kfloop-stream", secret_key="redis-url"),
        description="On a cluster, the Kubernetes Secret that provides the variable used in url.",
    )
    key: str | None = Field(None, description="Stream key; default `kfloop:<project>:events`.")
    group: str = Field("kfloop-features", description="Consumer group of the feature workers.")
    claim_idle: str = Field(
        "15m",
        description="A record pending this long with another consumer (it died) is claimed by this one; longer than "
        "stream.archive_every, which is how long a live worker keeps its records pending.",
    )
    max_length: int | None = Field(
        None,
        ge=1000,
        description="Approximate cap on the stream's length (XADD MAXLEN ~) for `kfloop stream send`; null: no cap.",
    )

    _claim = field_validator("claim_idle")(classmethod(lambda cls, v: _duration(v)))


class KafkaStreamSource(Section):
    """A Kafka topic read by a consumer group through confluent-kafka (librdkafka), offsets committed by hand
    after the records are archived. Each message value is one event as JSON."""

    bootstrap_servers: str = Field(
        "${KAFKA_BOOTSTRAP_SERVERS}", description="host:port[,host:port]; `${VAR}` placeholders from the environment."
    )
    topic: str = Field(min_length=1, description="Topic of the events.")
    group_id: str = Field("kfloop-features", description="Consumer group id.")
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Further librdkafka settings (security.protocol, sasl.mechanism, …); values may use "
        "`${VAR}` placeholders for secrets.",
    )
    secrets: tuple[SecretRef, ...] = Field(
        (), description="On a cluster, the Kubernetes Secrets providing the variables options refer to."
    )


class StreamConfig(Section):
    """Streaming feature updates (``kfloop stream run``); absent: online features change only when the batch
    materialize stage runs."""

    source: StreamKind = Field("redis", description="redis (Redis Streams, the embedded default) or kafka.")
    redis: RedisStreamSource = Field(
        RedisStreamSource(),
        description="The Redis stream; its server also keeps the worker's per-entity window state (with Kafka too).",
    )
    kafka: KafkaStreamSource | None = Field(None, description="The Kafka topic, when source is kafka.")
    batch_size: int = Field(1000, ge=1, le=100_000, description="Records read and applied together.")
    poll: str = Field("1s", description="How long one read waits for records before the worker flushes anyway.")
    archive_every: str = Field(
        "5m",
        description="How often accepted records are committed to the raw lake dataset (and then acknowledged): "
        "the batch stages see them from then on.",
    )
    archive_rows: int = Field(100_000, ge=1, description="Commit to the lake earlier once this many records wait.")
    replicas: int = Field(1, ge=1, le=64, description="Workers of the chart's Deployment (one consumer group).")

    _durations = field_validator("poll", "archive_every")(classmethod(lambda cls, v: _duration(v)))

    def stream_key(self, project: str) -> str:
        """The Redis stream of ``project``'s events."""
        return self.redis.key or f"kfloop:{project}:events"
