"""``kfloop demo-data`` and ``kfloop ingest``: make source data, and ingest it outside a pipeline."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, spinner, workspace
from kfloop.cli.summary import ingest_table, quality_table
from kfloop.errors import ConfigError, GateFailedError
from kfloop.storage import S3Storage


@handle_errors
def demo_data(
    out: Annotated[str, typer.Option(help="Output path, or s3://bucket/key (uses the config's S3 endpoint).")],
    rows: Annotated[int, typer.Option(min=1, help="Number of clean transactions.")] = 100_000,
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet | jsonl | avro; default: from extension.")] = "",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 42,
    start: Annotated[str, typer.Option(help="First event day (UTC), YYYY-MM-DD.")] = "2026-01-01",
    days: Annotated[int, typer.Option(min=1, help="Span of event times in days.")] = 90,
    drift: Annotated[str, typer.Option(help="e.g. 'amounts=1.8,categories,fraud@2026-03-01'.")] = "",
    defects: Annotated[str, typer.Option(help="e.g. 'nulls=0.01,duplicates=0.005,wrong_types=0.002'.")] = "",
    skip_existing: Annotated[bool, typer.Option(help="Do nothing if the output file exists.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Generate seeded card-transaction demo data (fraud label, optional drift and defects)."""
    from kfloop.demo import DefectSpec, DemoSpec, DriftSpec, format_from_path, generate, write_frame

    is_s3 = out.startswith("s3://")
    if skip_existing and not is_s3 and Path(out).exists():
        console.print(f"{out} exists; skipped")
        return
    try:
        spec = DemoSpec(
            rows=rows,
            seed=seed,
            start=datetime.fromisoformat(start),
            days=days,
            drift=DriftSpec.parse(drift) if drift else None,
            defects=DefectSpec.parse(defects) if defects else DefectSpec(),
        )
        file_format = fmt or format_from_path(out)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    with spinner() as progress:
        progress.add_task(f"generating {rows:,} rows", total=None)
        data = generate(spec)
        if is_s3:
            storage = workspace(load(config))
            if not isinstance(storage, S3Storage):
                raise ConfigError("storage: writing to s3:// needs storage.type 's3' in the config")
            from kfloop.sources import split_s3_uri

            bucket, key = split_s3_uri(out)
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / Path(key).name
                write_frame(data.frame, local, file_format)
                if not storage.client.bucket_exists(bucket):
                    storage.client.make_bucket(bucket)
                storage.client.fput_object(bucket, key, str(local))
        else:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            write_frame(data.frame, Path(out), file_format)
    injected = ", ".join(f"{k}={len(v)}" for k, v in data.injected.items() if v) or "none"
    console.print(f"wrote {len(data.frame):,} rows to {out} ({file_format}); injected defects: {injected}")


@handle_errors
def ingest(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[str, typer.Option(help="Source URI; default: source.uri from the config.")] = "",
) -> None:
    """Ingest the source into the lake now (the pipeline's first step, without the pipeline)."""
    from kfloop.components.ingest import ingest as run_ingest

    cfg = load(config)
    storage = workspace(cfg)
    s3 = storage.client if isinstance(storage, S3Storage) else None
    with spinner() as progress:
        task = progress.add_task("ingesting", total=None)
        result = run_ingest(
            cfg,
            storage,
            source_uri=source or None,
            s3=s3,
            on_batch=lambda n: progress.update(task, description=f"ingesting: {n:,} rows read"),
        )
    console.print(ingest_table(result.to_dict()))


@handle_errors
def validate(
    config: ConfigOption = DEFAULT_CONFIG,
    input_uri: Annotated[
        str, typer.Option("--input", help="A data file to check, in its own scratch workspace (kept for review).")
    ] = "",
) -> None:
    """Run the data contract outside the pipeline; exits 1 when an `error` check fails."""
    from kfloop.components.ingest import ingest as run_ingest
    from kfloop.components.validate import validate as run_validate
    from kfloop.layout import adhoc_prefix, local_workdir
    from kfloop.step import new_run_id
    from kfloop.storage import LocalStorage

    cfg = load(config)
    storage = workspace(cfg)
    with spinner() as progress:
        progress.add_task("validating", total=None)
        ingested = None
        if input_uri:
            s3 = storage.client if isinstance(storage, S3Storage) else None
            root = local_workdir(cfg.storage.type, cfg.storage.root) / adhoc_prefix(new_run_id())
            storage = LocalStorage(root)
            ingested = run_ingest(cfg, storage, source_uri=input_uri, s3=s3)
        result = run_validate(cfg, storage)
    console.print(quality_table(result.report.to_dict()))
    console.print(f"report: {escape(result.report_html_uri)}")
    for uri in (ingested.quarantine_uri if ingested else None, result.quarantine_uri):
        if uri:
            console.print(f"quarantine: {escape(uri)}")
    if not result.report.gate_passed:
        raise GateFailedError("data contract gate failed:\n" + result.report.gate_message())
