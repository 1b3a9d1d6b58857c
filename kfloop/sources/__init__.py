"""Source files: fetch a URI to local disk, then stream it as raw batches."""

from kfloop.sources.fetch import fetch_to_local, split_s3_uri
from kfloop.sources.readers import RawBatch, Reject, detect_format, iter_batches

__all__ = ["RawBatch", "Reject", "detect_format", "fetch_to_local", "iter_batches", "split_s3_uri"]
