"""One workspace filled by the stages' own functions (tests/report/workspace.py: two ingest + validate runs, three
registered versions promoted or rejected, retrain decisions), shared by the audit tests; ~1 s to build."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kfloop.audit import actor
from tests.report.workspace import FilledWorkspace, filled_workspace

#: The ServiceAccount a fake projected token names (what a pipeline step's pod would carry).
SERVICE_ACCOUNT = "serviceaccount:kubeflow/pipeline-runner"


Filled = FilledWorkspace


@pytest.fixture(scope="session")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return filled_workspace(tmp_path_factory.mktemp("audit"))


def fake_token(path: Path, sub: str = "system:serviceaccount:kubeflow:pipeline-runner") -> Path:
    """A token shaped like the kubelet's projected one (header.claims.signature; the claims are all that is read)."""
    claims = base64.urlsafe_b64encode(json.dumps({"sub": sub, "iss": "https://kubernetes.default.svc"}).encode())
    path.write_text(f"eyJhbGciOiJSUzI1NiJ9.{claims.decode().rstrip('=')}.c2lnbmF0dXJl")
    return path


@pytest.fixture
def in_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Records are written as a pod's ServiceAccount: the token path points at a fake projected token."""
    monkeypatch.setattr(actor, "SERVICE_ACCOUNT_TOKEN", fake_token(tmp_path / "token"))
    return SERVICE_ACCOUNT
