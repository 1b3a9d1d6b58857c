"""Erasure of one entity from every store (``kfloop forget``) and the tombstones ingest consults."""

from kfloop.forget.erase import ACTION, ForgetReport, forget, trained_on
from kfloop.forget.target import Target, parse_target

__all__ = ["ACTION", "ForgetReport", "Target", "forget", "parse_target", "trained_on"]
