"""Overlapping writers of one lake dataset: stage outside the lease, commit inside it.

A run opens a :func:`transaction` on a dataset. It announces itself with a heartbeat object
``lake/<dataset>/_active/<run>.json`` (rewritten by a daemon thread) before it stores anything, then
does the expensive work with no lock held, storing every file under its run id. Only
:meth:`Transaction.commit` takes the dataset's lease (``lake/<dataset>/_lock``): it re-reads the
manifest, lets the caller merge its files into that *current* manifest (so a concurrent commit is
never dropped), checks the fencing token, and writes ``_runs/<run>.json`` then ``_manifest.json``.

Still under the lease, the commit sweeps what nobody needs: files (and stray run records) of runs that
are neither in the manifest nor alive (heartbeat older than ``stale_after_s``, or a process on this
host, told apart by its boot id, that has exited), and files a recompute retired longer than
``retire_grace_s`` ago. So cleanup never deletes a
file another live run may still commit, and a reader of an older manifest keeps its files for the
grace period.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from kfloop import lake, layout
from kfloop.errors import StorageError
from kfloop.storage import Storage
from kfloop.storage._process import host_identity, writer_exited
from kfloop.storage.lease import lease

__all__ = ["CommitPolicy", "Transaction", "appended", "replaced", "transaction"]

log = logging.getLogger(__name__)

Update = Callable[[lake.Manifest], lake.Manifest | None]
Referenced = Callable[[lake.Manifest], set[str]]


@dataclass(frozen=True)
class CommitPolicy:
    """Timing of the protocol. Defaults suit production; tests shrink them to see takeovers quickly."""

    stale_after_s: float = 120.0  # a run (its heartbeat or its lease) silent this long is dead
    timeout_s: float = 300.0  # a commit waits this long for a busy dataset, then LeaseBusyError
    retire_grace_s: float = 3600.0  # files a recompute replaced stay readable this long

    @property
    def heartbeat_s(self) -> float:
        return self.stale_after_s / 4


def appended(current: lake.Manifest, files: list[lake.DataFile], run: dict) -> lake.Manifest:
    """``current`` plus this run's files (an incremental ingest)."""
    return dataclasses.replace(current, files=[*current.files, *files], runs=[*current.runs, run])


def replaced(current: lake.Manifest, files: list[lake.DataFile], run: dict) -> lake.Manifest:
    """``files`` as the whole dataset (a full recompute); the files they replace are retired, not deleted,
    because readers holding the previous manifest may still be reading them."""
    keep = {f.key for f in files}
    now = lake.now_iso()
    retired = [*current.retired, *(lake.RetiredFile(f.key, now) for f in current.files if f.key not in keep)]
    return dataclasses.replace(current, files=list(files), runs=[*current.runs, run], retired=retired)


class Transaction:
    """One run's writes to one dataset. Use through :func:`transaction`."""

    def __init__(
        self,
        storage: Storage,
        dataset: str,
        run_id: str,
        policy: CommitPolicy,
        side: Mapping[str, Referenced],
    ) -> None:
        self.storage = storage
        self.dataset = dataset
        self.run_id = run_id
        self.policy = policy
        self.side = dict(side)
        self.committed = False  # the manifest naming this run's files was (or may have been) written
        self._staged: list[str] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- heartbeat --------------------------------------------------------------------------------------

    def _write_heartbeat(self) -> None:
        body = {"run_id": self.run_id, "host": host_identity(), "pid": os.getpid(), "at": lake.now_iso()}
        self.storage.write_text(layout.active_key(self.dataset, self.run_id), json.dumps(body))

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.policy.heartbeat_s):
            try:
                self._write_heartbeat()
            except Exception as err:  # transient (or a bug): the thread must not die, or the live run looks dead
                log.warning("run %s: heartbeat on dataset %s failed: %s", self.run_id, self.dataset, err)

    def start(self) -> None:
        """Announce the run before it stores anything, so no sweep takes its files for a dead run's."""
        self._write_heartbeat()
        self._beat = threading.Thread(target=self._beat_loop, name=f"heartbeat:{self.run_id}", daemon=True)
        self._beat.start()

    def finish(self) -> None:
        """Stop the heartbeat; an uncommitted run's own files go at once (a later sweep takes any it missed:
        with the heartbeat gone the run counts as dead)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with contextlib.suppress(StorageError, OSError):
            if not self.committed:
                self._discard()
            self.storage.delete(layout.active_key(self.dataset, self.run_id))

    # --- staging and commit -----------------------------------------------------------------------------

    def stage(self, *keys: str) -> None:
        """Record files this run stored: committed with the manifest, or deleted if the run does not commit."""
        self._staged.extend(keys)

    def _discard(self) -> None:
        for key in self._staged:
            self.storage.delete(key)
        self._staged.clear()

    def commit(self, update: Update, empty: lake.Manifest) -> lake.Manifest:
        """Under the dataset's lease: ``update(current manifest, or empty for a new dataset)`` → the manifest
        to write, or None to commit nothing (a concurrent run already did this work: the staged files are
        discarded). The manifest's last run record must be this run's. Returns the manifest now in force;
        ``self.committed`` says whether it is this run's."""
        name = f"dataset {self.dataset}"
        with lease(
            self.storage,
            layout.lake_lock_key(self.dataset),
            name=name,
            owner=self.run_id,
            timeout_s=self.policy.timeout_s,
            stale_after_s=self.policy.stale_after_s,
        ) as held:
            current = lake.read_manifest(self.storage, self.dataset) or empty
            updated = update(current)
            present = set(self.storage.list(layout.data_prefix(self.dataset) + "/"))
            if updated is None:
                self._discard()
                return current
            self._check_staged(present)
            updated = self._expire_retired(updated)
            stamped = {**updated.runs[-1], "lease_token": held.token}  # which lease generation committed it
            updated = dataclasses.replace(updated, runs=[*updated.runs[:-1], stamped])
            run_key = layout.run_record_key(self.dataset, self.run_id)
            held.check()  # a run record only for a run still holding the lease (a later sweep takes a stray one)
            self.storage.write_text(run_key, json.dumps(updated.runs[-1], indent=2))
            clock = self.storage.modified(run_key)  # the storage's own "now": heartbeat ages free of clock skew
            held.check()  # fencing: a holder taken over as stale must not overwrite its successor's commit
            self.committed = True
            self.storage.write_text(layout.manifest_key(self.dataset), updated.to_json())
            self._staged.clear()
            try:  # committed: a failing cleanup must not report the run as failed (the next commit sweeps)
                self._sweep(updated, present, clock)
            except (StorageError, OSError) as err:
                log.warning("dataset %s: cleanup after run %s's commit failed: %s", self.dataset, self.run_id, err)
            return updated

    def _check_staged(self, present: set[str]) -> None:
        data = layout.data_prefix(self.dataset) + "/"
        missing = [k for k in self._staged if (k not in present if k.startswith(data) else not self.storage.exists(k))]
        if missing:
            raise StorageError(
                f"dataset {self.dataset}: run {self.run_id} cannot commit: {len(missing)} of its staged files were "
                f"removed (e.g. {self.storage.uri(missing[0])}); its heartbeat was silent for more than "
                f"{self.policy.stale_after_s:g}s, so it was taken for dead. Re-run it."
            )

    def _expire_retired(self, manifest: lake.Manifest) -> lake.Manifest:
        """Drop retired files past the grace period from the manifest; the sweep then deletes them."""
        now = datetime.now(UTC)
        live = [
            r
            for r in manifest.retired
            if (now - datetime.fromisoformat(r.retired_at)).total_seconds() <= self.policy.retire_grace_s
        ]
        return dataclasses.replace(manifest, retired=live)

    # --- cleanup ----------------------------------------------------------------------------------------

    def _live_runs(self, now: datetime) -> set[str]:
        """Runs whose heartbeat is fresh at ``now`` (by the storage's clock); dead runs' heartbeats go."""
        live = set()
        slack = self.storage.mtime_resolution_s
        for key in self.storage.list(layout.active_prefix(self.dataset) + "/"):
            run = key.rsplit("/", 1)[-1].removesuffix(".json")
            try:
                age = (now - self.storage.modified(key)).total_seconds() - slack
                text = self.storage.read_text(key)
            except FileNotFoundError:
                continue  # finished meanwhile
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            body = body if isinstance(body, dict) else {}  # unreadable: alive until it ages out
            exited = writer_exited(body, host_key="host")
            if run == self.run_id or (age <= self.policy.stale_after_s and not exited):
                live.add(run)
            else:
                self.storage.delete(key)
        return live

    def _sweep(self, manifest: lake.Manifest, present: set[str], now: datetime) -> None:
        """Delete files (and run records) of runs that neither committed them nor are alive, and expired
        retired files. Every candidate is listed before the live runs are: a run announces itself before it
        stores anything, so a file listed here belongs to a run whose heartbeat the later listing sees."""
        side = [key for p in self.side for key in self.storage.list(p)]
        records = self.storage.list(layout.run_records_prefix(self.dataset) + "/")
        live = self._live_runs(now)
        keep = {f.key for f in manifest.files} | {r.key for r in manifest.retired}
        doomed = [k for k in present if k not in keep and layout.part_run_id(k) not in live]
        needed = set().union(*(referenced(manifest) for referenced in self.side.values()))
        for key in side:
            run = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if key not in needed and run not in live:
                doomed.append(key)
        committed = {r.get("run_id") for r in manifest.runs}
        for key in records:
            run = key.rsplit("/", 1)[-1].removesuffix(".json")
            if run not in committed and run not in live:  # killed between its run record and the manifest
                doomed.append(key)
        for key in doomed:
            self.storage.delete(key)
        if doomed:
            log.info("dataset %s: removed %d file(s) of dead runs or past their grace", self.dataset, len(doomed))


@contextlib.contextmanager
def transaction(
    storage: Storage,
    dataset: str,
    run_id: str,
    *,
    policy: CommitPolicy | None = None,
    side: Mapping[str, Referenced] | None = None,
) -> Iterator[Transaction]:
    """Run ``run_id``'s writes to ``dataset`` in the block; call :meth:`Transaction.commit` at most once.

    ``side`` maps prefixes of run-named side files (``<prefix><run>.parquet``, e.g. quarantine) to the keys
    still referenced given the committed manifest; the sweep deletes the others of dead runs.
    """
    txn = Transaction(storage, dataset, run_id, policy or CommitPolicy(), side or {})
    txn.start()
    try:
        yield txn
    finally:
        txn.finish()
