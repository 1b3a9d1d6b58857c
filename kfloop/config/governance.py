"""The ``governance`` section: lineage, roles, retention and erasure, the answers regulated teams need.

Each subsection lives in its own module (one concern each); this one only gathers them.
"""

from __future__ import annotations

from pydantic import Field

from kfloop.config._base import Section
from kfloop.config.lineage import LineageConfig
from kfloop.config.retention import RetentionConfig
from kfloop.config.roles import RolesConfig


class GovernanceConfig(Section):
    """Lineage, roles and retention (the audit trail is always on: it has no settings)."""

    lineage: LineageConfig = Field(
        default_factory=LineageConfig, description="OpenLineage run events of every step, the drift check and retrains."
    )
    roles: RolesConfig = Field(
        default_factory=RolesConfig,
        description="Roles that become Kubernetes Roles/RoleBindings and Feast permissions, and gate the CLI.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="How long each kind of data is kept (`kfloop retention apply`)."
    )
