"""``kfloop stream run|send|status``: the streaming feature worker, a producer for files, the consumer group."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, workspace

app = typer.Typer(help="Streaming features: events update the online store within seconds.", no_args_is_help=True)

#: The worker's /metrics port (the chart's Deployment scrapes it).
METRICS_PORT = 9108


def _stream_config(config: Path):
    from kfloop.errors import ConfigError

    cfg = load(config)
    if cfg.stream is None:
        raise ConfigError(f"{config}: no `stream:` section: add one (source: redis or kafka) to stream events")
    return cfg


@app.command("run")
@handle_errors
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    metrics_port: int = typer.Option(METRICS_PORT, "--metrics-port", help="Serve /metrics here (0: off)."),
    until_idle: bool = typer.Option(False, "--until-idle", help="Stop at the first read that finds no records."),
    max_records: int | None = typer.Option(None, "--max-records", min=1, help="Stop after this many records."),
) -> None:
    """Read events, update the online features of every view, archive the records into the lake, acknowledge."""
    from kfloop.stream.worker import open_worker, serve_metrics, stop_on_signals

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feast").setLevel(logging.WARNING)  # its registry refreshes would be a line per batch
    cfg = _stream_config(config)
    worker = open_worker(cfg, workspace(cfg), os.environ)
    serve_metrics(worker.metrics, metrics_port)
    stop_on_signals(worker)
    console.print(
        f"stream worker {escape(worker.writer)}: {cfg.stream.source} → "
        f"{', '.join(w.view.name for w in worker.windows)} ({cfg.features.online_store.type} online store)"
    )
    stats = worker.run(until_idle=until_idle, max_records=max_records)
    skipped = ", ".join(f"{n:,} {k}" for k, n in sorted(stats.skipped.items())) or "none"
    console.print(
        f"{stats.records:,} records: applied {stats.applied}, online rows written {stats.written}, "
        f"not counted online: {skipped}; {stats.archived:,} archived into the lake in {stats.archives} commit(s)"
    )


@app.command("send")
@handle_errors
def send(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="A file in the source's format."),
    config: ConfigOption = DEFAULT_CONFIG,
    rate: float = typer.Option(0, "--rate", min=0, help="Events per second (0: as fast as possible)."),
    restamp: bool = typer.Option(
        False, "--restamp", help="Set each event's time to when it is sent (replay old data as live traffic)."
    ),
) -> None:
    """Append the records of a file to the Redis stream, one event each (for demos and tests; applications
    produce their own events)."""
    from datetime import UTC, datetime

    from kfloop.sources.readers import iter_batches
    from kfloop.stream.sources import send_events

    cfg = _stream_config(config)
    ts, sent, t0 = cfg.source.timestamp_column, 0, time.monotonic()
    chunk = max(1, int(rate / 20)) if rate else 1000
    for batch in iter_batches(source, cfg.source, display=str(source)):
        records = batch.table.to_pylist()
        for i in range(0, len(records), chunk):
            part = records[i : i + chunk]
            if restamp:
                now = datetime.now(UTC).isoformat()
                part = [{**r, ts: now} for r in part]
            sent += send_events(cfg, part)
            if rate:
                time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
    console.print(f"sent {sent:,} events to {cfg.stream.stream_key(cfg.project)}")


@app.command("status")
@handle_errors
def status(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """The consumer group: records waiting, pending (read, not yet archived), consumers, entities kept per view."""
    from kfloop.stream.sources import redis_client
    from kfloop.stream.state import RedisHistories

    cfg = _stream_config(config)
    client = redis_client(cfg)
    key = cfg.stream.stream_key(cfg.project)
    t = Table(title=f"stream {key} ({cfg.stream.source})")
    for col in ("group", "consumers", "pending", "waiting", "length"):
        t.add_column(col)
    if cfg.stream.source == "redis" and client.exists(key):
        length = client.xlen(key)
        for g in client.xinfo_groups(key):
            t.add_row(
                g["name"].decode(), str(g["consumers"]), f"{g['pending']:,}", f"{g.get('lag') or 0:,}", f"{length:,}"
            )
    console.print(t)
    state = RedisHistories(client, cfg.project)
    for view in cfg.features.views:
        console.print(f"{escape(view.name)}: {state.entities(view.name):,} entities with a window history")
