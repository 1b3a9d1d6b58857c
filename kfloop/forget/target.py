"""The entity being erased (``KEY=VALUE``), its keyed hash, and the tombstones ingest consults.

Why a keyed hash: the audit trail and the tombstones must say *which* entity was erased without keeping the value
itself in clear. An HMAC-SHA256 under a per-workspace secret (``forget/secret.key``, created on first use with an
exclusive create) lets ingest recognise an erased entity's rows again without storing the value; someone who reads
the audit log or the tombstones alone cannot recover it or test guesses. Whoever can read the workspace can read
the secret too: this protects exported logs, not against the workspace's administrators.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from kfloop import layout
from kfloop.column_types import ColumnType
from kfloop.config import Config
from kfloop.errors import ConfigError
from kfloop.lake import now_iso
from kfloop.storage import Storage

#: Characters that may make up an entity value inside an unparsable record's raw text (a whole token).
_TOKEN = re.compile(r"[\w.@+:-]+")


@dataclass(frozen=True)
class Target:
    """One entity: the key column, its typed value and the value's canonical text (what is hashed)."""

    key: str
    value: object
    text: str
    column_type: ColumnType

    def scalar(self, arrow_type: pa.DataType) -> pa.Scalar:
        """The value as a scalar of a column's type: typed columns compare typed, text columns (quarantined
        rows keep the source text) compare the canonical text."""
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return pa.scalar(self.text, arrow_type)
        return pa.scalar(self.value).cast(arrow_type)

    def mask(self, column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        """True where ``column`` holds this entity (nulls false)."""
        return pc.fill_null(pc.equal(column, self.scalar(column.type)), False)


def entity_keys(config: Config) -> list[str]:
    """Columns that identify an entity: ``source.entity_keys`` and every feature view's or table's entity."""
    keys = list(config.source.entity_keys)
    keys += [v.entity for v in config.features.views]
    keys += [t.key for t in config.features.tables]
    return list(dict.fromkeys(keys))


def canonical_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_target(config: Config, arg: str) -> Target:
    """``KEY=VALUE`` → a typed target; KEY must be an entity key, VALUE must parse as its column's type."""
    key, sep, raw = arg.partition("=")
    key = key.strip()
    keys = entity_keys(config)
    if not sep or not key:
        raise ConfigError(f"{arg!r}: expected ENTITY_KEY=VALUE, e.g. {keys[0]}=...")
    if key not in keys:
        raise ConfigError(f"{key!r} is not an entity key of this config; the entity keys are: {', '.join(keys)}")
    kind = config.source.columns.get(key) or next(
        (t.source.columns[key] for t in config.features.tables if key in t.source.columns), ColumnType.STRING
    )
    value: object
    try:
        if kind is ColumnType.INT64:
            value = int(raw.strip())
        elif kind is ColumnType.FLOAT64:
            value = float(raw.strip())
        elif kind is ColumnType.BOOL:
            value = {"true": True, "false": False}[raw.strip().lower()]
        elif kind is ColumnType.STRING:
            value = raw
        else:
            raise ConfigError(f"{key}: entity keys of type {kind.value} cannot be erased by value")
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{key}={raw!r}: not a valid {kind.value} value") from err
    if value == "":
        raise ConfigError(f"{key}: the value is empty")
    return Target(key, value, canonical_text(value), kind)


def workspace_secret(storage: Storage, *, create: bool) -> bytes | None:
    """The workspace's HMAC secret; created (exclusively: two first runs agree on one) when ``create``."""
    key = layout.forget_secret_key()
    try:
        return bytes.fromhex(storage.read_text(key).strip())
    except FileNotFoundError:
        if not create:
            return None
    storage.create_exclusive(key, secrets.token_hex(32).encode())
    return bytes.fromhex(storage.read_text(key).strip())


def keyed_hash(secret: bytes, key: str, text: str) -> str:
    """HMAC-SHA256 of one (key, value text): what the audit record and the tombstone hold instead of the value."""
    return hmac.new(secret, f"{key}\x00{text}".encode(), hashlib.sha256).hexdigest()


def write_tombstone(storage: Storage, target: Target, digest: str, actor: str) -> bool:
    """Record the erased entity for ingest (before anything is erased); False when it already was."""
    body = {"key": target.key, "hmac": digest, "at": now_iso(), "actor": actor}
    return storage.create_exclusive(layout.tombstone_key(digest), json.dumps(body, indent=2).encode())


def tombstones(storage: Storage) -> frozenset[str]:
    """The keyed hashes of every erased entity (the listing names them: nothing is read)."""
    names = (k.rsplit("/", 1)[-1] for k in storage.list(layout.tombstone_prefix() + "/"))
    return frozenset(n.removesuffix(".json") for n in names if n.endswith(".json"))


def raw_mentions(raw: str | None, target: Target) -> bool:
    """Whether an unparsable record's raw text holds the value as a whole token (it cannot be read by column,
    so this errs on the side of erasing)."""
    return raw is not None and target.text in _TOKEN.findall(raw)


def raw_tokens(raw: str | None) -> list[str]:
    return _TOKEN.findall(raw) if raw else []
