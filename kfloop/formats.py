"""The file formats kfloop reads and writes, and the file-name suffixes that name them: defined once for the
config (``source.format``), the source readers and the demo writer, so they cannot disagree."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

FileFormat = Literal["csv", "parquet", "jsonl", "avro"]
FORMATS: tuple[FileFormat, ...] = get_args(FileFormat)
FORMAT_BY_SUFFIX: dict[str, FileFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",  # JSON Lines under the common .json name (one object per line)
    ".avro": "avro",
}


def format_of(path: str | Path) -> FileFormat | None:
    """The format a file's suffix names (case-insensitive), or None when it names none."""
    return FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
