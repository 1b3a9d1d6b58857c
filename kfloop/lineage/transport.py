"""Where a step run's events go: the workspace file (default), an OpenLineage HTTP backend, or nowhere.

The file of one run (``lineage/events/<date>/<run>.jsonl``) is rewritten whole at each event, through the
storage's atomic write: a reader (or S3) sees START, then START + COMPLETE, never half a line. Runs never share a
file, so overlapping runs need no lock. Sending never fails the step: an HTTP error is logged and the event is
kept in the file instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import httpx

from kfloop import layout
from kfloop.config.lineage import LineageConfig
from kfloop.storage import Storage

log = logging.getLogger(__name__)


class RunTransport:
    """Sends the events of one step run, in order, by the config's transport."""

    def __init__(
        self, config: LineageConfig, storage: Storage, date: str, kfloop_run_id: str, environ: Mapping[str, str]
    ) -> None:
        self.config = config
        self.storage = storage
        self.key = layout.lineage_events_key(date, kfloop_run_id)
        self.environ = environ
        self.kept: list[dict] = []  # the events this run's file holds

    def send(self, event: dict) -> None:
        """Deliver ``event``; errors are logged, never raised (lineage must not break the step it describes)."""
        cfg = self.config
        if cfg.transport == "none":
            return
        posted = cfg.transport == "http" and self._post(event)
        if cfg.transport == "file" or cfg.keep_file or not posted:
            self.kept.append(event)
            self._write()

    def _write(self) -> None:
        body = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in self.kept)
        try:
            self.storage.write_text(self.key, body)
        except Exception as err:  # storage down: the step's own writes will say so; lineage only logs
            log.warning("lineage: could not write %s: %s", self.key, err)

    def _post(self, event: dict) -> bool:
        cfg = self.config
        assert cfg.url is not None  # the config requires it for transport http
        url = f"{cfg.url.rstrip('/')}/{cfg.endpoint.lstrip('/')}"
        headers = {"Content-Type": "application/json"}
        if cfg.api_key is not None:
            token = self.environ.get(cfg.api_key.env)
            if not token:
                log.warning(
                    "lineage: %s is not set (governance.lineage.api_key); event kept in %s", cfg.api_key.env, self.key
                )
                return False
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = httpx.post(url, content=json.dumps(event), headers=headers, timeout=cfg.timeout_seconds())
        except httpx.HTTPError as err:
            log.warning("lineage: POST %s failed (%s); event kept in %s", url, err, self.key)
            return False
        if response.is_success:
            return True
        log.warning(
            "lineage: POST %s answered %s %s; event kept in %s",
            url,
            response.status_code,
            response.text[:200],
            self.key,
        )
        return False
