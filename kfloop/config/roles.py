"""The ``governance.roles`` section: who may do what, as Kubernetes RBAC, Feast permissions and CLI checks.

Why one definition: a team that names its roles once (viewer, ml-engineer, operator…) must get the same answer
from the cluster (Roles/RoleBindings of the chart), the feature store (Feast ``Permission`` objects) and the local
CLI (``kfloop promote`` refused for a viewer). Each role lists its members and the kfloop actions it allows, from
the fixed vocabulary :data:`ACTIONS`; what an action means in Kubernetes and Feast terms is one table in
:mod:`kfloop.roles`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from kfloop.config._base import Section

#: The kfloop actions a role can allow. ``read`` is every read-only command; the others are state changes.
Action = Literal["read", "run", "promote", "rollback", "deploy", "forget", "retention"]
ACTIONS: tuple[Action, ...] = ("read", "run", "promote", "rollback", "deploy", "forget", "retention")

#: Reserved role name: the Feast permission that refuses the Feast actions no configured role allows.
NOBODY = "nobody"
#: ``user:<login>``, ``serviceaccount:<namespace>/<name>`` or ``group:<name>``.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
MEMBER_PATTERN = rf"^(user:[^\s/:]+|serviceaccount:{_LABEL}/[a-z0-9]([-.a-z0-9]*[a-z0-9])?|group:\S+)$"


class Role(Section):
    """One role: its members and the kfloop actions they may take."""

    members: tuple[str, ...] = Field(
        (),
        description="Who holds the role: `user:<login>` (the OS login locally, the Kubernetes user on a cluster), "
        "`serviceaccount:<namespace>/<name>`, or `group:<name>` (a Kubernetes group on a cluster; locally the "
        "user's operating-system groups).",
    )
    allow: tuple[Action, ...] = Field(
        min_length=1,
        description="kfloop actions the role allows: read (every read-only command), run (ingest, validate, "
        "pipeline runs, materialization), promote, rollback, deploy (cluster objects, Feast apply, schedules), "
        "forget (erasure), retention (`kfloop retention apply`).",
    )
    description: str = Field("", description="What the role is for (shown by `kfloop roles show`).")

    @field_validator("members")
    @classmethod
    def _members_well_formed(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        for i, member in enumerate(members):
            if not re.match(MEMBER_PATTERN, member):
                raise ValueError(
                    f"members.{i}: {member!r} is not user:<login>, serviceaccount:<namespace>/<name> or group:<name>"
                )
        return members


class RolesConfig(Section):
    """Roles. Empty (the default): no checks, every command allowed, no RBAC objects or Feast permissions."""

    roles: dict[str, Role] = Field(
        default_factory=dict,
        description="Role name (a DNS label: it names the chart's Role and RoleBinding) → its members and allowed "
        "actions. When any role is set, the CLI refuses state-changing commands to whoever holds no role allowing "
        "them, and the refusal is audited.",
    )

    @field_validator("roles")
    @classmethod
    def _names_are_labels(cls, roles: dict[str, Role]) -> dict[str, Role]:
        for name in roles:
            if not re.match(r"^[a-z][a-z0-9-]{0,39}$", name):
                raise ValueError(f"{name!r}: a role name must be a DNS label (a-z, 0-9, -; at most 40 characters)")
            if name == NOBODY:
                raise ValueError(f"{NOBODY!r} is reserved: it names the Feast permission refusing what no role allows")
        return roles

    @property
    def enabled(self) -> bool:
        """True when roles are configured (then they are enforced and rendered)."""
        return bool(self.roles)
