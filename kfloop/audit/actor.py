"""Who is acting: the Kubernetes ServiceAccount inside a pod, else the local user.

Why: an audit record is only useful if it says who made the change. In a pod (a pipeline step, a CronWorkflow,
the serving process) the identity Kubernetes authorizes is the pod's ServiceAccount, read from the projected
token the kubelet mounts; on a workstation it is the operating-system account running the CLI (its effective uid,
so an environment variable cannot name someone else).
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import pwd
from pathlib import Path

#: Where the kubelet mounts a pod's ServiceAccount token (its ``sub`` claim names the account).
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_SA_PREFIX = "system:serviceaccount:"


def _service_account(token_path: Path) -> str | None:
    """``serviceaccount:<namespace>/<name>`` from the token's claims (not verified: it is our own pod's token,
    read for the record, never to authorize anything)."""
    try:
        token = token_path.read_text().strip()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(sub, str) or not sub.startswith(_SA_PREFIX):
        return None
    namespace, _, name = sub[len(_SA_PREFIX) :].partition(":")
    return f"serviceaccount:{namespace}/{name}" if namespace and name else None


def current_actor(token_path: Path | None = None) -> str:
    """The identity a record is written under: ``serviceaccount:<ns>/<name>`` in a pod, else ``user:<login>``.
    ``token_path`` defaults to :data:`SERVICE_ACCOUNT_TOKEN` as the module holds it when called (tests point it at
    a token file of their own)."""
    account = _service_account(token_path or SERVICE_ACCOUNT_TOKEN)
    if account is not None:
        return account
    try:  # the account the process runs as, not $USER/$LOGNAME: `USER=bob kfloop …` must not act (or sign) as bob
        return f"user:{pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:  # no passwd entry for this uid (a container run as an arbitrary uid): the environment's name
        pass
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "user:unknown"
