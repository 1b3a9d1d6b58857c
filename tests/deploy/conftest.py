"""What the chart tests share: the cluster demo's config with a stream worker reading Kafka (the demo has no
``stream`` section, so the chart renders no worker for it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfloop.config import Config, load_config, parse_config

CLUSTER_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "kfloop.cluster.yaml"
#: Kafka with SASL, its password from a Secret of its own; three workers in one consumer group.
KAFKA_STREAM = {
    "source": "kafka",
    "replicas": 3,
    "kafka": {
        "bootstrap_servers": "kafka.data:9093",
        "topic": "transactions",
        "options": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.password": "${KAFKA_PW}"},
        "secrets": [{"env": "KAFKA_PW", "secret_name": "kafka-creds", "secret_key": "password"}],
    },
}


@pytest.fixture(scope="module")
def stream_config() -> Config:
    """The cluster demo streaming from Kafka."""
    data = load_config(CLUSTER_CONFIG).model_dump(mode="json")
    return parse_config({**data, "stream": KAFKA_STREAM}, "the cluster demo with a Kafka stream")
