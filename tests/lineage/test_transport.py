"""Transports and failures on small fresh workspaces: a failing step emits FAIL with its error (and still raises
its own error); the http transport POSTs each event, with the token, to a real local HTTP server; a backend that
answers 500, is down, or is missing its token leaves the step unharmed and the events in the workspace file;
``none`` writes nothing."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kfloop import layout
from kfloop.components.deploy import deploy_champion
from kfloop.components.validate import validate
from kfloop.config import Config, parse_config
from kfloop.errors import ConfigError, NoChampionError, SourceError
from kfloop.lineage.graph import read_events
from kfloop.monitoring.monitor import run_check
from kfloop.storage import LocalStorage
from tests.conftest import demo_config, free_port
from tests.lineage.schema_check import validate_event

TOKEN_ENV = "KFLOOP_TEST_LINEAGE_TOKEN"


class Backend:
    """A real HTTP server that records each POST (path, Authorization, JSON body) and answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None, dict]] = []
        self.status = 200
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                backend.posts.append((self.path, self.headers.get("Authorization"), body))
                self.send_response(backend.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.server.shutdown()
    b.server.server_close()


def _config(root: Path, **lineage: object) -> tuple[Config, LocalStorage]:
    data = demo_config(root).model_dump(mode="json")
    data["governance"]["lineage"] = lineage
    return parse_config(data, "lineage test"), LocalStorage(root)


def _file_events(storage: LocalStorage) -> list[dict]:
    return read_events(storage)


def test_a_failing_step_emits_fail_with_its_error_and_still_raises_it(tmp_path: Path) -> None:
    config, storage = _config(tmp_path / "ws")
    with pytest.raises(SourceError, match="transactions") as raised:
        validate(config, storage)  # nothing ingested yet
    with pytest.raises(NoChampionError):
        run_check(config, storage)  # the drift check fails the same way
    events = _file_events(storage)
    assert [(e["job"]["name"], e["eventType"]) for e in events] in (
        [("validate", "START"), ("validate", "FAIL"), ("drift_check", "START"), ("drift_check", "FAIL")],
        [("drift_check", "START"), ("drift_check", "FAIL"), ("validate", "START"), ("validate", "FAIL")],
    )
    fail = next(e for e in events if e["eventType"] == "FAIL" and e["job"]["name"] == "validate")
    start = next(e for e in events if e["eventType"] == "START" and e["job"]["name"] == "validate")
    assert fail["run"]["runId"] == start["run"]["runId"]
    error = fail["run"]["facets"]["errorMessage"]
    assert error["message"] == f"SourceError: {raised.value}"
    assert error["programmingLanguage"] == "python" and "validate" in error["stackTrace"]
    for event in events:
        validate_event(event)


def test_the_http_transport_posts_each_event_with_the_token(
    tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    config, storage = _config(
        tmp_path / "ws",
        transport="http",
        url=backend.url,
        api_key={"env": TOKEN_ENV},
        keep_file=False,
    )
    backend.posts.clear()
    backend.status = 201
    result = deploy_champion(config, storage)  # nothing registered: nothing to deploy, a run all the same
    assert result["action"] == "none"
    assert [(path, auth, body["eventType"]) for path, auth, body in backend.posts] == [
        ("/api/v1/lineage", "Bearer s3cret", "START"),
        ("/api/v1/lineage", "Bearer s3cret", "COMPLETE"),
    ]
    for _, _, body in backend.posts:
        validate_event(body)
    assert storage.list(layout.lineage_events_prefix() + "/") == []  # keep_file false, and every POST succeeded


@pytest.mark.parametrize("failure", ["500", "down", "no token"])
def test_a_failing_backend_keeps_the_events_in_the_file_and_the_step_succeeds(
    tmp_path: Path, backend: Backend, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}" if failure == "down" else backend.url
    if failure != "no token":
        monkeypatch.setenv(TOKEN_ENV, "s3cret")
    else:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    config, storage = _config(
        tmp_path / "ws", transport="http", url=url, api_key={"env": TOKEN_ENV}, keep_file=False, timeout="2s"
    )
    backend.posts.clear()
    backend.status = 500
    assert deploy_champion(config, storage)["action"] == "none"
    assert len(backend.posts) == (2 if failure == "500" else 0)
    assert [e["eventType"] for e in _file_events(storage)] == ["START", "COMPLETE"]


def test_transport_none_writes_nothing(tmp_path: Path) -> None:
    config, storage = _config(tmp_path / "ws", transport="none")
    assert deploy_champion(config, storage)["action"] == "none"
    with pytest.raises(SourceError):
        validate(config, storage)
    assert storage.list(layout.lineage_events_prefix() + "/") == []


def test_http_without_a_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"governance\.lineage: .*needs governance\.lineage\.url"):
        _config(tmp_path / "ws", transport="http")
