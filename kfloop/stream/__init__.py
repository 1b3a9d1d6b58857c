"""Streaming feature updates: events from Redis Streams or Kafka update the online features within seconds,
from the same definitions and with the same engine as the batch feature stage (``kfloop stream run``)."""
