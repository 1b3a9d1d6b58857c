"""Keeping the local predictor on the registry's champion, and checking every model against the config.

Two kinds of failure, treated differently:

- **transient** (the registry cannot be read or a file fetched: ``StorageError``, connection errors,
  timeouts, any ``OSError``): nothing is concluded about the version; the check runs again after
  ``serving.reload_seconds``, doubling after each consecutive failure up to ``serving.reload_max_seconds``.
- **refusal** (the version itself is bad: a checksum mismatch or missing file (``CorruptModelError``), files
  that do not load, or inputs that do not match the config): one error line naming the version and the
  reason, ``kfloop_model_refused_total{model,version,reason}``, and the version is not tried again while it
  stays the champion. When the champion moves away and later back to it, it is tried once more (the
  re-promotion is the operator's signal). The version being served keeps serving; with nothing valid
  loaded the predictor is not ready and its readiness says why.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from kserve.logging import logger as log

from kfloop.config import Config
from kfloop.errors import CorruptModelError, KfloopError, StorageError
from kfloop.layout import CARD_FILE
from kfloop.registry import ModelRegistry
from kfloop.serving.metrics import MODEL_REFUSED, RELOAD_ERRORS, set_model_version
from kfloop.serving.predictor import LoadedModel, Predictor, load_model_dir
from kfloop.serving.warmup import warm_model
from kfloop.training.preprocess import feature_columns

__all__ = ["ChampionWatch", "input_mismatch"]


class _RefusedError(Exception):
    """The version itself cannot be served (``kind``: corrupt, unloadable, inputs)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def input_mismatch(config: Config, model: LoadedModel) -> str | None:
    """Why ``model`` cannot take what the config's transformer hands it (None when it can).

    The transformer builds the inputs from the config (stored features of ``features.service``: the views'
    aggregates and the tables' columns, then ``features.request_features``), each numeric or categorical as
    ``feature_columns`` says; a model trained on other columns, or on a column of the other kind (a table's
    int64 code before it was listed in ``features.categorical``), would fail every request."""
    numeric, categorical = feature_columns(config)
    pre = model.preprocessor
    renamed = _naming_mismatch(config, [*pre.numeric, *pre.categorical])
    if renamed:
        return f"model {model.version}'s inputs do not match the config: {renamed}"
    problems = []
    service = config.features.service
    if model.feature_service and model.feature_service != service:
        problems.append(f"trained on feature service {model.feature_service!r}, the config serves {service!r}")
    for kind, has, given in (("numeric", pre.numeric, numeric), ("categorical", pre.categorical, categorical)):
        needed = [c for c in has if c not in given]
        unused = [c for c in given if c not in has]
        if needed:
            problems.append(f"needs {kind} input(s) {', '.join(needed)} that the config does not provide")
        if unused:
            problems.append(f"was not trained on {kind} input(s) {', '.join(unused)} that the config provides")
    if not problems:
        return None
    return (
        f"model {model.version}'s inputs do not match the config (features.views, features.tables, "
        f"features.request_features, features.categorical, features.service): {'; '.join(problems)}"
    )


def _naming_mismatch(config: Config, trained: list[str]) -> str | None:
    """Why a model trained under the other ``features.naming`` cannot be served (None if it was not): its
    stored-feature inputs are exactly the config's under the other scheme, e.g. ``amount_mean_24h`` where the
    config now gives ``customers__amount_mean_24h``."""
    features = config.features
    other = "short" if features.naming == "full" else "full"
    theirs = features.model_copy(update={"naming": other}).feature_names()
    ours = features.feature_names()
    stored = [c for c in trained if c not in features.request_features]
    if not theirs or theirs == ours or set(stored) != set(theirs):
        return None
    return (
        f"it was trained with features.naming: {other} (inputs such as {theirs[0]}), the config has "
        f"features.naming: {features.naming} (which names that input {ours[0]}); retrain under the config's naming "
        f"(`kfloop run`, then promote the new version) or set features.naming: {other} to serve this model"
    )


class ChampionWatch:
    """Serves the registry's champion (or one pinned version) on ``predictor``; see the module docstring."""

    def __init__(
        self, config: Config, registry: ModelRegistry, predictor: Predictor, workdir: Path, pinned: str | None
    ) -> None:
        self.config = config
        self.registry = registry
        self.predictor = predictor
        self.workdir = workdir
        self.pinned = pinned
        self.interval = config.serving.reload_seconds
        self.max_interval = max(config.serving.reload_max_seconds, self.interval)
        self.refused: dict[str, str] = {}  # version → reason; only the current champion is remembered

    def target(self) -> str:
        """The version to serve; raises NoChampionError / ModelNotFoundError (unknown pinned version)."""
        return self.registry.servable(self.pinned)

    def start(self) -> None:
        """At start-up: find the version (failing if there is none), then try it once. A refusal or a
        transient failure starts the server not ready, saying why; ``run`` retries or waits for the next
        champion."""
        version = self.target()
        try:
            self.check_now(version)
        except Exception as err:
            self._transient(err, version)

    async def run(self) -> None:
        """The background loop: a check every ``reload_seconds``, backing off after transient errors."""
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self.check_now)
            except Exception as err:
                delay = min(delay * 2, self.max_interval)
                self._transient(err, self.pinned or "the champion", delay)
            else:
                delay = self.interval

    def check_now(self, version: str | None = None) -> None:
        """Serve ``version`` (default: the pinned version or the current champion) unless it is served or
        refused already. Raises on transient errors; refusals are recorded, not raised."""
        if version is None:
            champion = None if self.pinned else self.registry.champion()
            version = self.pinned or (champion.version if champion else None)
        self.refused = {v: r for v, r in self.refused.items() if v == version}  # moved away: forget
        if version is None or version == self.predictor.version or version in self.refused:
            return
        try:
            loaded = self._load(version)
        except _RefusedError as refusal:
            self._refuse(version, refusal)
            return
        previous = self.predictor.version
        self.predictor.serve(loaded)
        set_model_version(self.config.training.model_name, loaded.version, previous)
        if previous:
            log.info("switched %s from %s to %s", self.predictor.name, previous, loaded.version)
        else:
            log.info("serving %s %s", self.predictor.name, loaded.version)

    def _load(self, version: str) -> LoadedModel:
        """Fetch (checksums verified), load and check ``version``; ``_RefusedError`` when the version is bad."""
        try:
            directory = self._fetch(version)
        except CorruptModelError as err:
            raise _RefusedError("corrupt", str(err)) from err
        try:
            loaded = load_model_dir(directory)
        except StorageError as err:  # a file of the verified version is not what the loader expects
            raise _RefusedError("unloadable", str(err)) from err
        except OSError:
            raise  # the local copy could not be read: transient
        except Exception as err:
            raise _RefusedError("unloadable", f"{type(err).__name__}: {err}") from err
        finally:
            shutil.rmtree(self.workdir / version, ignore_errors=True)  # loaded into memory (or refused)
        mismatch = input_mismatch(self.config, loaded)
        if mismatch:
            raise _RefusedError("inputs", mismatch)
        warm_model(loaded)  # its first forward pass here, off the event loop, not in a client's request
        return loaded

    def _fetch(self, version: str) -> Path:
        dest = self.workdir / version
        if dest.exists():
            shutil.rmtree(dest)
        self.registry.fetch(version, dest)
        card = self.registry.get(version).card
        (dest / CARD_FILE).write_text(json.dumps(card, default=str))
        return dest

    def _refuse(self, version: str, refusal: _RefusedError) -> None:
        self.refused[version] = f"{refusal.kind}: {refusal}"
        MODEL_REFUSED.labels(self.config.training.model_name, version, refusal.kind).inc()
        current = self.predictor.version
        staying = f"still serving {current}" if current else "nothing valid is loaded: not ready"
        log.error("refused %s version %s (%s): %s; %s", self.registry.model, version, refusal.kind, refusal, staying)
        if not current:
            self.predictor.refuse(f"version {version} refused ({refusal.kind}): {refusal}")

    def _transient(self, err: Exception, version: str, retry_in: float | None = None) -> None:
        RELOAD_ERRORS.labels(self.config.training.model_name).inc()
        detail = f"{type(err).__name__}: {err}"
        retry = f"retrying in {retry_in or self.interval:g} s"
        trace = not isinstance(err, (KfloopError, OSError))  # an unexpected error: show where it came from
        log.warning("cannot load %s yet (%s); %s", version, detail, retry, exc_info=trace)
        if self.predictor.model is None:
            self.predictor.refuse(f"loading {version} failed ({detail}); {retry}")
