"""Seeded demo data for the card-fraud example: clean rows, drift, defects, and file writers (the flights
example's data, with its attribute tables, is in :mod:`kfloop.demo.flights`)."""

from __future__ import annotations

from kfloop.demo.defects import DEFECT_KINDS, NULLABLE_COLUMNS, DefectSpec, inject_defects
from kfloop.demo.generator import (
    CHANNELS,
    COLUMNS,
    DEFAULT_START,
    MERCHANT_CATEGORIES,
    DemoSpec,
    DriftSpec,
    GeneratedData,
    generate,
)
from kfloop.demo.writer import FORMATS, FileFormat, avro_schema, format_from_path, write_frame

__all__ = [
    "CHANNELS",
    "COLUMNS",
    "DEFAULT_START",
    "DEFECT_KINDS",
    "FORMATS",
    "MERCHANT_CATEGORIES",
    "NULLABLE_COLUMNS",
    "DefectSpec",
    "DemoSpec",
    "DriftSpec",
    "FileFormat",
    "GeneratedData",
    "avro_schema",
    "format_from_path",
    "generate",
    "inject_defects",
    "write_frame",
]
