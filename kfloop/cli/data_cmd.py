"""``kfloop demo-data``, ``kfloop ingest`` and ``kfloop validate``: make source data, and ingest and validate it
outside a pipeline (the main source, or an attribute table of ``features.tables`` with ``--table``)."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import (
    DEFAULT_CONFIG,
    ConfigOption,
    console,
    handle_errors,
    load,
    require_role,
    spinner,
    workspace,
)
from kfloop.cli.summary import ingest_table, quality_table
from kfloop.config import Config
from kfloop.errors import ConfigError, GateFailedError
from kfloop.storage import S3Storage

TableOption = Annotated[
    str,
    typer.Option(
        "--table",
        metavar="NAME",
        help="An attribute table of features.tables instead of the main source: its own file, contract, lake "
        "dataset, quarantine and quality report.",
    ),
]


def _scoped(cfg: Config, table: str) -> Config:
    """The config ingest and validate run on: the main source's, or attribute table ``table``'s."""
    from kfloop.step import for_table

    return for_table(cfg, table)


def _tables_hint(cfg: Config, table: str, verb: str) -> None:
    """Without --table only the main source is done: say which attribute tables were not, and how to do them."""
    if table or not cfg.features.tables:
        return
    names = ", ".join(t.name for t in cfg.features.tables)
    console.print(
        escape(f"attribute tables not {verb}: {names} (one: --table NAME; `kfloop run` does every table)"),
        style="dim",
        highlight=False,
    )


@handle_errors
def demo_data(
    out: Annotated[str, typer.Option(help="Output path, or s3://bucket/key (uses the config's S3 endpoint).")],
    rows: Annotated[int, typer.Option(min=1, help="Number of clean transactions (flights: of flights).")] = 100_000,
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet | jsonl | avro; default: from extension.")] = "",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 42,
    start: Annotated[
        str, typer.Option(help="First event day, YYYY-MM-DD (UTC; flights: local); default 2026-01-01 (flights 02-01).")
    ] = "",
    days: Annotated[
        int | None, typer.Option(min=1, help="Span of event times in days; default 90 (flights 60).")
    ] = None,
    drift: Annotated[str, typer.Option(help="e.g. 'amounts=1.8,categories,fraud@2026-03-01'.")] = "",
    defects: Annotated[
        str, typer.Option(help="e.g. 'nulls=0.01,duplicates=0.005,wrong_types=0.002'; demo: the demo's mix.")
    ] = "",
    skip_existing: Annotated[bool, typer.Option(help="Do nothing if the output file exists.")] = False,
    example: Annotated[
        str,
        typer.Option(
            help="fraud: card transactions (one file); flights: departures (arrival delay, regression) and their "
            "attribute tables: --out DIR writes DIR/flights.csv, airports.csv, weather.csv; --out FILE writes "
            "FILE and the tables beside it (examples/flights)."
        ),
    ] = "fraud",
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Generate seeded demo data: card transactions (fraud label, optional drift and defects), or flights."""
    from kfloop.demo import DefectSpec, DemoSpec, DriftSpec, format_from_path, generate, write_frame

    if example == "flights":
        if drift or defects:
            raise typer.BadParameter("--drift and --defects are options of --example fraud")
        _demo_flights(out, rows, fmt, seed, start, days, skip_existing, config)
        return
    if example != "fraud":
        raise typer.BadParameter(f"--example {example!r}: one of fraud, flights")
    start = start or "2026-01-01"
    days = days or 90
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


def _demo_flights(
    out: str, rows: int, fmt: str, seed: int, start: str, days: int | None, skip_existing: bool, config: Path
) -> None:
    """``demo-data --example flights``: the flights file and its airports and weather tables (local or S3)."""
    from datetime import date
    from typing import cast

    from kfloop.demo import FORMATS, FileFormat, flights, format_from_path

    is_s3 = out.startswith("s3://")
    key = out.removeprefix("s3://").partition("/")[2] if is_s3 else out
    paths = flights.output_paths(key)
    if skip_existing and not is_s3 and paths["flights"].exists():
        console.print(f"{paths['flights']} exists; skipped")
        return
    try:
        spec = flights.FlightsSpec(
            rows=rows,
            seed=seed,
            start=date.fromisoformat(start) if start else flights.DEFAULT_START,
            days=days or flights.DEFAULT_DAYS,
        )
        if fmt not in ("", *FORMATS):
            raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        if not fmt:
            for path in paths.values():
                format_from_path(path)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    file_format = cast("FileFormat | None", fmt or None)
    with spinner() as progress:
        progress.add_task(f"generating {rows:,} flights", total=None)
        data = flights.generate(spec)
        if is_s3:
            storage = workspace(load(config))
            if not isinstance(storage, S3Storage):
                raise ConfigError("storage: writing to s3:// needs storage.type 's3' in the config")
            from kfloop.sources import split_s3_uri

            bucket, _ = split_s3_uri(out)
            with tempfile.TemporaryDirectory() as tmp:
                written = flights.write(data, Path(tmp) / key, file_format)
                if not storage.client.bucket_exists(bucket):
                    storage.client.make_bucket(bucket)
                for name, local in written.items():
                    storage.client.fput_object(bucket, paths[name].as_posix(), str(local))
        else:
            flights.write(data, Path(out), file_format)
    bucket_uri = "s3://" + out.removeprefix("s3://").partition("/")[0] + "/"
    where = {name: f"{bucket_uri}{p.as_posix()}" if is_s3 else str(p) for name, p in paths.items()}
    gap = f"; {len(data.dst_gap)} in the hour the clock change skips" if data.dst_gap else ""
    cancelled = int(data.flights["cancelled"].sum())
    console.print(
        f"wrote {len(data.flights):,} flights to {where['flights']} ({cancelled:,} cancelled: NA delays{gap}), "
        f"{len(data.airports)} airports to {where['airports']}, {len(data.weather):,} weather readings to "
        f"{where['weather']}"
    )


@handle_errors
def ingest(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[
        str, typer.Option(help="Source URI; default: source.uri from the config (with --table: the table's).")
    ] = "",
    table: TableOption = "",
) -> None:
    """Ingest the source into the lake now (the pipeline's first step, without the pipeline).

    The main source only; --table NAME ingests attribute table NAME of features.tables instead
    (its own file and contract, into lake dataset NAME; bad rows to its quarantine).
    `kfloop run` ingests the main source and every table.
    """
    from kfloop.components.ingest import ingest as run_ingest

    root = load(config)
    cfg = _scoped(root, table)
    require_role(root, "run")
    storage = workspace(cfg)
    s3 = storage.client if isinstance(storage, S3Storage) else None
    what = f"ingesting {table}" if table else "ingesting"
    with spinner() as progress:
        task = progress.add_task(what, total=None)
        result = run_ingest(
            cfg,
            storage,
            source_uri=source or None,
            s3=s3,
            on_batch=lambda n: progress.update(task, description=f"{what}: {n:,} rows read"),
        )
    console.print(ingest_table(result.to_dict()))
    _tables_hint(root, table, "ingested")


@handle_errors
def validate(
    config: ConfigOption = DEFAULT_CONFIG,
    input_uri: Annotated[
        str, typer.Option("--input", help="A data file to check, in its own scratch workspace (kept for review).")
    ] = "",
    table: TableOption = "",
) -> None:
    """Run the data contract outside the pipeline; exits 1 when an `error` check fails.

    The main source only; --table NAME checks attribute table NAME of features.tables instead
    (its ingested rows, or the --input file, under the table's own contract).
    `kfloop run` validates the main source and every table.
    """
    from kfloop.components.ingest import ingest as run_ingest
    from kfloop.components.validate import validate as run_validate
    from kfloop.layout import adhoc_prefix, local_workdir
    from kfloop.step import new_run_id
    from kfloop.storage import LocalStorage

    root = load(config)
    cfg = _scoped(root, table)
    require_role(root, "run")
    storage = workspace(cfg)
    with spinner() as progress:
        progress.add_task(f"validating {table}" if table else "validating", total=None)
        ingested = None
        if input_uri:
            s3 = storage.client if isinstance(storage, S3Storage) else None
            scratch = local_workdir(cfg.storage.type, cfg.storage.root) / adhoc_prefix(new_run_id())
            storage = LocalStorage(scratch)
            ingested = run_ingest(cfg, storage, source_uri=input_uri, s3=s3)
        result = run_validate(cfg, storage)
    console.print(quality_table(result.report.to_dict()))
    console.print(f"report: {escape(result.report_html_uri)}")
    for uri in (ingested.quarantine_uri if ingested else None, result.quarantine_uri):
        if uri:
            console.print(f"quarantine: {escape(uri)}")
    _tables_hint(root, table, "validated")
    if not result.report.gate_passed:
        where = f" on table {table}" if table else ""
        raise GateFailedError(f"data contract gate failed{where}:\n" + result.report.gate_message())
