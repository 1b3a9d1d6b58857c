"""The audit trail (hash-chained, append-only) and who acts (see :mod:`kfloop.audit.chain`)."""

from kfloop.audit.actor import current_actor
from kfloop.audit.chain import Verdict, append, read, verify

__all__ = ["Verdict", "append", "current_actor", "read", "verify"]
