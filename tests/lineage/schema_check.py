"""Validate OpenLineage events against the spec's JSON schema, offline: the vendored spec files (schema/, see
SOURCE.md) and kfloop's custom facet schema, resolved through a local ``referencing`` registry. Every facet is
validated against the schema its own ``_schemaURL`` names; a URL no local schema has fails."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from kfloop.lineage.facets import CUSTOM_SCHEMA, CUSTOM_SCHEMA_URL

SCHEMA_DIR = Path(__file__).parent / "schema"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


@functools.cache
def registry() -> Registry:
    docs = [json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))]
    resources = [(d["$id"], Resource.from_contents(d)) for d in docs]
    resources.append((CUSTOM_SCHEMA_URL, Resource.from_contents(CUSTOM_SCHEMA)))
    return Registry().with_resources(resources)


def _validator(url: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": url}, registry=registry(), format_checker=FormatChecker())


def facets_of(event: dict) -> Iterator[tuple[str, dict]]:
    """(where, facet) for every facet of the event: run, job, and each dataset's three facet groups."""
    for name, facet in (event["run"].get("facets") or {}).items():
        yield f"run.{name}", facet
    for name, facet in (event["job"].get("facets") or {}).items():
        yield f"job.{name}", facet
    for side in ("inputs", "outputs"):
        for ds in event.get(side) or []:
            for group in ("facets", "inputFacets", "outputFacets"):
                for name, facet in (ds.get(group) or {}).items():
                    yield f"{side}[{ds['name']}].{group}.{name}", facet


def validate_event(event: dict) -> None:
    """Raise (jsonschema's ValidationError, or AssertionError naming the facet) unless the event is valid."""
    _validator(RUN_EVENT).validate(event)
    uuid.UUID(event["run"]["runId"])
    for where, facet in facets_of(event):
        url = facet.get("_schemaURL", "")
        base = url.split("#", 1)[0]
        try:
            registry().get_or_retrieve(base)
        except Exception as err:
            raise AssertionError(f"{where}: no local schema for {url}") from err
        _validator(url).validate(facet)
