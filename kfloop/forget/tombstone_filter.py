"""Ingest's side of erasure: rows of an erased entity are dropped before anything is stored.

The tombstones hold keyed hashes, not values, so a batch's distinct values of each entity column are hashed and
looked up (a few thousand HMACs per batch, and nothing at all while no entity was ever erased). Dropped rows are
counted and reported, never quarantined: their content is what was erased. An ingest that started before an
erasure and commits after it would bring the rows back, so the commit re-reads the tombstones under the lease and
refuses when one appeared meanwhile (:meth:`TombstoneFilter.check_unchanged`).
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from kfloop.errors import SourceError
from kfloop.forget.target import canonical_text, keyed_hash, raw_tokens, tombstones, workspace_secret
from kfloop.storage import Storage

__all__ = ["TombstoneFilter"]


class TombstoneFilter:
    """Drops rows whose entity columns hash to a tombstone; ``dropped`` counts them."""

    def __init__(self, storage: Storage, keys: Iterable[str]) -> None:
        self.storage = storage
        self.keys = list(dict.fromkeys(keys))
        self.known = tombstones(storage)
        self.secret = workspace_secret(storage, create=False) if self.known else None
        self.dropped = 0

    @property
    def active(self) -> bool:
        return bool(self.known) and self.secret is not None

    def _erased(self, key: str, column: pa.ChunkedArray | pa.Array) -> pa.Array | None:
        """Mask of the rows of an erased entity in ``column`` (None: none are)."""
        assert self.secret is not None
        values = pc.unique(column.drop_null())
        hit = [v for v in values.to_pylist() if keyed_hash(self.secret, key, canonical_text(v)) in self.known]
        if not hit:
            return None
        return pc.fill_null(pc.is_in(column, value_set=pa.array(hit, values.type)), False)

    def keep(self, table: pa.Table, raw_column: str | None = None) -> pa.Table:
        """``table`` without the rows of erased entities (by each entity column present; an unparsable record by
        any token of its raw text)."""
        if not self.active or table.num_rows == 0:
            return table
        drop = None
        for key in self.keys:
            if key in table.column_names:
                mask = self._erased(key, table.column(key))
                if mask is not None:
                    drop = mask if drop is None else pc.or_(drop, mask)
        if raw_column and raw_column in table.column_names:
            mask = self._raw_mask(table.column(raw_column).to_pylist())
            if mask is not None:
                drop = mask if drop is None else pc.or_(drop, mask)
        if drop is None:
            return table
        kept = table.filter(pc.invert(drop))
        self.dropped += table.num_rows - kept.num_rows
        return kept

    def _raw_mask(self, raws: list[str | None]) -> pa.Array | None:
        assert self.secret is not None
        flags = []
        for raw in raws:
            tokens = raw_tokens(raw)
            flags.append(any(keyed_hash(self.secret, k, t) in self.known for k in self.keys for t in tokens))
        return pa.array(flags) if any(flags) else None

    def erased_text(self, text: str | None) -> bool:
        """Whether an unparsable record's raw text names an erased entity (then it counts as dropped)."""
        if not self.active or text is None:
            return False
        assert self.secret is not None
        hit = any(keyed_hash(self.secret, k, t) in self.known for k in self.keys for t in raw_tokens(text))
        self.dropped += hit
        return hit

    def check_unchanged(self, dataset: str) -> None:
        """Under the dataset's lease, before the commit: an entity erased since this run read the tombstones
        would be written back by it, so the run commits nothing (its staged files are discarded)."""
        new = tombstones(self.storage) - self.known
        if new:
            raise SourceError(
                f"dataset {dataset}: an entity was erased (kfloop forget) while this ingest ran; nothing was "
                "committed. Run the ingest again: it drops the erased entity's rows."
            )
