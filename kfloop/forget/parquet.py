"""Find and remove one entity's rows in Parquet objects of the workspace, one object at a time.

Why only the entity columns are read first: most objects do not hold the entity (one customer in a partition of
thousands), so a scan reads one column per object and only the objects that match are read whole, filtered and
written back. Objects that do not match are never written, so they stay byte-identical.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kfloop.forget.target import Target, raw_mentions
from kfloop.storage import Storage

#: An unparsable record's raw text in quarantine files (kfloop.components.ingest.RAW_COLUMN).
RAW_COLUMN = "_raw"
#: The first bytes of every Parquet file.
PARQUET_MAGIC = b"PAR1"
#: Objects scanned at once (pyarrow reads without the GIL; S3 downloads overlap).
SCAN_THREADS = 4

__all__ = ["Hit", "erase_rows", "is_parquet", "kept_rows", "scan"]


@dataclass(frozen=True)
class Hit:
    """An object holding the entity: how many of its rows are the entity's, and a local copy to rewrite from."""

    key: str
    rows: int
    matched: int
    local: Path


def _mask(table: pa.Table, target: Target) -> pa.Array | pa.ChunkedArray | None:
    mask = target.mask(table.column(target.key)) if target.key in table.column_names else None
    if RAW_COLUMN in table.column_names:
        raw = pa.array([raw_mentions(r, target) for r in table.column(RAW_COLUMN).to_pylist()], pa.bool_())
        mask = raw if mask is None else pc.or_(mask, raw)
    return mask


def _scan_one(storage: Storage, key: str, target: Target, tmp: Path) -> Hit | None:
    local = storage.local_path(key)
    if local is None:
        local = tmp / key.replace("/", "__")
        storage.download_file(key, local)
    pf = pq.ParquetFile(local)
    try:
        names = [n for n in (target.key, RAW_COLUMN) if n in pf.schema_arrow.names]
        if not names:
            return None
        table = pf.read(columns=names)
    finally:
        pf.close()
    mask = _mask(table, target)
    matched = (pc.sum(mask).as_py() or 0) if mask is not None else 0
    return Hit(key, table.num_rows, matched, local) if matched else None


def is_parquet(storage: Storage, key: str) -> bool:
    """Whether an object is Parquet by its magic bytes (kfp.local's artifacts have no extension)."""
    local = storage.local_path(key)
    if local is not None:
        with open(local, "rb") as fh:
            return fh.read(4) == PARQUET_MAGIC
    return storage.read_bytes(key)[:4] == PARQUET_MAGIC


def scan(storage: Storage, keys: Iterable[str], target: Target, tmp: Path, *, by_suffix: bool = True) -> list[Hit]:
    """The objects among ``keys`` (Parquet: by name, or ``by_suffix=False`` by content) that hold the entity, in
    key order."""
    keys = [k for k in keys if (k.endswith(".parquet") if by_suffix else is_parquet(storage, k))]
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        found = pool.map(lambda k: _scan_one(storage, k, target, tmp), keys)
        return [h for h in found if h is not None]


def kept_rows(hit: Hit, target: Target) -> pa.Table:
    """``hit``'s object without the entity's rows (same schema)."""
    table = pq.read_table(hit.local)
    mask = _mask(table, target)
    return table.filter(pc.invert(mask)) if mask is not None else table


def erase_rows(storage: Storage, hit: Hit, target: Target, check: Callable[[], None] | None = None) -> pa.Table:
    """Rewrite ``hit``'s object in place (atomically, zstd) without the entity's rows; an object left empty is
    deleted instead. Returns the rows kept. ``check`` runs just before the write (a lease's fencing check)."""
    kept = kept_rows(hit, target)
    if check is not None:
        check()
    if kept.num_rows == 0:
        storage.delete(hit.key)
        return kept
    with tempfile.TemporaryDirectory(prefix="kfloop-forget-") as tmp:
        out = Path(tmp) / "rewritten.parquet"
        pq.write_table(kept, out, compression="zstd")
        storage.upload_file(out, hit.key)
    return kept
