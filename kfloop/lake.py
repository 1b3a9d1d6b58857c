"""The lake: partitioned Parquet datasets in workspace storage, committed by a JSON manifest.

Layout under ``lake/<dataset>/``::

    data/event_date=YYYY-MM-DD/part-<run>-<n>.parquet   data files (Hive partitioning), named by run
    _runs/<run>.json                                     one manifest per committed run
    _manifest.json                                       the commit point: every live file
    _active/<run>.json, _lock                            running writers' heartbeats, the commit lease

A file is part of the dataset only once ``_manifest.json`` lists it. Writers stage files under their
run id and commit through :mod:`kfloop.lake_commit` (manifest merged under the dataset's lease), so a
killed run leaves nothing visible and overlapping runs never lose each other's commits. Readers go
through :func:`read_manifest` / :func:`dataset_files`; files a full recompute replaced stay listed as
``retired`` (and readable) for a grace period.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop.errors import StorageError
from kfloop.files import file_sha256
from kfloop.layout import manifest_key, part_key
from kfloop.schema import schema_hash
from kfloop.storage import Storage

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataFile:
    """One committed Parquet file and what it holds."""

    key: str
    rows: int
    bytes: int
    sha256: str
    event_date: str
    run_id: str
    min_event_time: str
    max_event_time: str


@dataclass(frozen=True)
class RetiredFile:
    """A file a recompute replaced: no longer part of the dataset, kept for readers of older manifests."""

    key: str
    retired_at: str


@dataclass
class Manifest:
    """What a dataset holds now; the next stage and lineage read this."""

    dataset: str
    schema: dict[str, str]
    schema_hash: str
    files: list[DataFile] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    retired: list[RetiredFile] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def watermark(self) -> str | None:
        """Newest event time committed; the next ingestion only takes rows newer than this."""
        return max((f.max_event_time for f in self.files), default=None)

    @property
    def min_event_time(self) -> str | None:
        return min((f.min_event_time for f in self.files), default=None)

    @property
    def content_hash(self) -> str:
        """Hash over the files' hashes: equal hashes mean equal data."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.key):
            h.update(f"{f.key}:{f.sha256}\n".encode())
        return h.hexdigest()

    def to_json(self) -> str:
        body = asdict(self)
        body.update(
            rows=self.rows,
            watermark=self.watermark,
            min_event_time=self.min_event_time,
            max_event_time=self.watermark,
            content_hash=self.content_hash,
        )
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        return cls(
            dataset=d["dataset"],
            schema=d["schema"],
            schema_hash=d["schema_hash"],
            files=[DataFile(**f) for f in d["files"]],
            runs=d.get("runs", []),
            retired=[RetiredFile(**r) for r in d.get("retired", [])],
            format_version=d.get("format_version", FORMAT_VERSION),
        )


def read_manifest(storage: Storage, dataset: str) -> Manifest | None:
    """The committed manifest, or None for a dataset never written."""
    try:
        text = storage.read_text(manifest_key(dataset))
    except FileNotFoundError:
        return None
    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise StorageError(f"{storage.uri(manifest_key(dataset))}: corrupt manifest: {err}") from err


def schema_types(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def store_part(
    storage: Storage, path: Path, key: str, date: str, run_id: str, rows: int, lo: object, hi: object
) -> DataFile:
    """Store a finished local part file as ``key`` (not yet visible to readers: the manifest commits it) and
    describe it for the manifest; ``lo``/``hi``: its rows' event-time range."""
    digest, size = file_sha256(path), path.stat().st_size
    storage.move_file(path, key)
    return DataFile(key, rows, size, digest, date, run_id, _iso(lo), _iso(hi))


def _ascending(values: pa.ChunkedArray) -> bool:
    """Whether ``values`` never decrease (a null anywhere: no, so the rows are sorted as before)."""
    n = len(values)
    if n < 2:
        return True
    return bool(pc.all(pc.less_equal(values.slice(0, n - 1), values.slice(1)), skip_nulls=False).as_py())


class PartitionWriter:
    """Buffers typed rows per event date in local Parquet files, then stores and commits them.

    Memory stays bounded: rows go to per-date writers on local disk as soon as a date's buffer is
    large enough or the total buffer passes ``max_buffered_rows``. At most ``max_open`` files are open
    at once (a source spanning years has thousands of dates); a date written again after its file was
    closed gets another part file.
    """

    def __init__(
        self,
        dataset: str,
        schema: pa.Schema,
        timestamp_column: str,
        run_id: str,
        max_buffered_rows: int = 500_000,
        max_open: int = 64,
    ) -> None:
        self.dataset = dataset
        self.schema = schema
        self.ts = timestamp_column
        self.run_id = run_id
        self.max_buffered = max_buffered_rows
        self.flush_rows = max(10_000, max_buffered_rows // 8)
        self._tmp = tempfile.TemporaryDirectory(prefix="kfloop-lake-")
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered = 0
        self.max_open = max_open
        self._writers: dict[str, tuple[pq.ParquetWriter, Path]] = {}  # open, least recently used first
        self._done: list[tuple[str, Path]] = []  # closed part files
        self._stats: dict[Path, list] = {}  # part file -> [rows, min_ts, max_ts]
        # dictionary pages only where they pay off: strings (categories, ids) shrink, while a float or timestamp
        # column has few repeats and its dictionary attempt was the writer's largest cost
        self._dictionary = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]

    def add(self, table: pa.Table) -> None:
        """Route typed rows to their event-date partition."""
        if table.num_rows == 0:
            return
        # Contiguous slices per date (UTC date of the event) instead of one filter pass per date; rows are
        # sorted by date first unless they already are (a batch of date-partitioned lake files is: validate's
        # input), as the take of every column is most of the cost here.
        days = pc.cast(table.column(self.ts), pa.date32())
        if not _ascending(days):
            order = pc.sort_indices(days)
            table, days = table.take(order), days.take(order)
        offset = 0
        for entry in pc.value_counts(days):
            day, count = entry["values"].as_py(), entry["counts"].as_py()
            date = day.isoformat()
            self._buffers.setdefault(date, []).append(table.slice(offset, count))
            offset += count
            self._buffered += count
            if sum(t.num_rows for t in self._buffers[date]) >= self.flush_rows:
                self._flush(date)
        if self._buffered >= self.max_buffered:
            for date in list(self._buffers):
                self._flush(date)

    def _flush(self, date: str) -> None:
        parts = self._buffers.pop(date, [])
        if not parts:
            return
        table = pa.concat_tables(parts)
        self._buffered -= table.num_rows
        if date in self._writers:
            writer, path = self._writers.pop(date)
        else:
            if len(self._writers) >= self.max_open:
                self._close(next(iter(self._writers)))
            path = Path(self._tmp.name) / f"{date}-{len(self._stats):05d}.parquet"
            writer = pq.ParquetWriter(path, self.schema, compression="zstd", use_dictionary=self._dictionary)
        self._writers[date] = (writer, path)  # re-inserted: most recently used last
        writer.write_table(table)
        ts = table.column(self.ts)
        lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
        st = self._stats.setdefault(path, [0, lo, hi])
        st[0] += table.num_rows
        st[1], st[2] = min(st[1], lo), max(st[2], hi)

    def store(self, storage: Storage) -> list[DataFile]:
        """Close local files and store each under its partition; not yet visible to readers."""
        for date in list(self._buffers):
            self._flush(date)
        for date in list(self._writers):
            self._close(date)
        files = []
        for n, (date, path) in enumerate(sorted(self._done)):
            rows, lo, hi = self._stats[path]
            key = part_key(self.dataset, date, self.run_id, n)
            files.append(store_part(storage, path, key, date, self.run_id, rows, lo, hi))
        self._done.clear()
        return files

    def _close(self, date: str) -> None:
        writer, path = self._writers.pop(date)
        writer.close()
        self._done.append((date, path))

    def close(self) -> None:
        for writer, _ in self._writers.values():
            writer.close()
        self._writers.clear()
        self._tmp.cleanup()


def iter_dataset(
    storage: Storage, manifest: Manifest, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Yield the committed rows as Arrow tables of about ``batch_rows`` rows (small files are merged,
    large ones split), in ``columns`` order; memory stays bounded by the batch size."""
    pending: list[pa.Table] = []
    size = 0
    with tempfile.TemporaryDirectory(prefix="kfloop-read-") as tmp:
        for f in manifest.files:
            local = storage.local_path(f.key)
            if local is None:
                local = Path(tmp) / "part.parquet"
                storage.download_file(f.key, local)
            pf = pq.ParquetFile(local)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                table = pa.Table.from_batches([batch])
                pending.append(table.select(columns) if columns else table)
                size += table.num_rows
                if size >= batch_rows:
                    yield pa.concat_tables(pending).combine_chunks()
                    pending, size = [], 0
            pf.close()
        if pending:
            yield pa.concat_tables(pending).combine_chunks()


def new_manifest(dataset: str, schema: pa.Schema) -> Manifest:
    return Manifest(dataset=dataset, schema=schema_types(schema), schema_hash=schema_hash(schema))


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def dataset_files(storage: Storage, dataset: str) -> list[str]:
    """URIs of every committed data file (what readers should read, instead of listing the prefix)."""
    manifest = read_manifest(storage, dataset)
    return [storage.uri(f.key) for f in manifest.files] if manifest else []
