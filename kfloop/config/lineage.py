"""The ``governance.lineage`` section: where OpenLineage run events go.

Every step, the drift check and the retrain trigger emit START / COMPLETE / FAIL events (``kfloop.lineage``). The
workspace file is the default transport (it needs nothing running, and ``kfloop lineage`` reads it); ``http``
sends them to Marquez or any OpenLineage backend as well.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kfloop.config._base import Section
from kfloop.config.contract import parse_duration
from kfloop.config.storage import SecretRef


class LineageConfig(Section):
    """OpenLineage run events of every step, the drift check and the retrain trigger."""

    transport: Literal["file", "http", "none"] = Field(
        "file",
        description="`file`: JSON lines in the workspace (lineage/events/<date>/<run>.jsonl, what `kfloop lineage` "
        "reads); `http`: also POSTed to `url` (Marquez or any OpenLineage backend; a failed POST is logged and the "
        "event kept in the file); `none`: no events.",
    )
    namespace: str | None = Field(
        None,
        min_length=1,
        description="The OpenLineage namespace of the jobs and workspace datasets (default: `kfloop://<project>`).",
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the OpenLineage backend (transport http), e.g. `http://marquez:5000`.",
    )
    endpoint: str = Field(
        "api/v1/lineage", description="Path under url that takes the events (Marquez: `api/v1/lineage`)."
    )
    api_key: SecretRef | None = Field(
        None,
        description="Bearer token for the backend: the environment variable (locally) or Kubernetes Secret (on a "
        "cluster) that holds it; none: no Authorization header.",
    )
    timeout: str = Field("5s", description="How long one POST may take before it counts as failed (e.g. `5s`).")
    keep_file: bool = Field(
        True,
        description="With transport http: also write every event to the workspace file, so `kfloop lineage` works "
        "without the backend (failed POSTs are always kept there).",
    )

    @model_validator(mode="after")
    def _check(self) -> LineageConfig:
        if self.transport == "http" and not self.url:
            raise ValueError("governance.lineage.transport http needs governance.lineage.url")
        parse_duration(self.timeout)
        return self

    def namespace_for(self, project: str) -> str:
        """The namespace events use: the configured one, else ``kfloop://<project>``."""
        return self.namespace or f"kfloop://{project}"

    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout).total_seconds()
