"""``registry/<model>/<version>/`` holds an exported model, its ``model.json`` card and checksums;
``registry/<model>/stages.json`` says which version is champion and keeps the history.

Versions are immutable once registered. Registration uploads the files to a run-unique staging prefix
first, outside any lock; only numbering and the commit (server-side copies, then ``model.json`` created
exclusively as the commit point) run under the registry's lease, so a slow upload never holds it. Stage
changes run under the same lease, so two promotions racing leave exactly one champion and a history that
records both. Downloads verify every file's SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kfloop import layout
from kfloop.audit import events as audit_events
from kfloop.errors import CorruptModelError, ModelNotFoundError, NoChampionError, StorageError
from kfloop.files import file_sha256
from kfloop.storage import Lease, Storage, lease

#: ``rejected``: the gate turned the candidate down and it never served; ``archived``: a former champion.
STAGES = ("candidate", "champion", "rejected", "archived")
STALE_STAGING = timedelta(days=1)  # a staging prefix this old belongs to a registration that died


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its card, and its stage as of the last read of ``stages.json``."""

    model: str
    version: str
    stage: str
    card: dict = field(repr=False)

    @property
    def metrics(self) -> dict:
        return self.card.get("metrics", {})


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ModelRegistry:
    """The versions and stages of one model name."""

    def __init__(self, storage: Storage, model: str, owner: str = "") -> None:
        self.storage = storage
        self.model = model
        self.owner = owner  # the run id named in "busy" errors (else the card's pipeline_run)
        self.prefix = layout.registry_prefix(model)
        self._card_key = re.compile(rf"^{re.escape(self.prefix)}/(v\d+)/model\.json$")

    @contextlib.contextmanager
    def _lease(self, owner: str = "") -> Iterator[Lease]:
        with lease(
            self.storage, f"{self.prefix}/_lease", name=f"model registry {self.model!r}", owner=owner or self.owner
        ) as held:
            yield held

    # --- reading ---------------------------------------------------------------------------------
    def _stages(self) -> dict:
        key = layout.stages_key(self.model)
        try:
            stages = json.loads(self.storage.read_text(key))
        except FileNotFoundError:
            return {"champion": None, "versions": self._version_folders(), "history": []}
        except ValueError as err:
            raise CorruptModelError(
                f"{self.storage.uri(key)}: not valid JSON ({err}); restore it from history"
            ) from err
        if not isinstance(stages, dict) or not {"champion", "versions", "history"} <= set(stages):
            raise CorruptModelError(f"{self.storage.uri(key)}: expected keys champion, versions, history")
        return stages

    def _version_folders(self) -> dict[str, str]:
        """Versions present on storage (so a lost stages.json never lets a version number be reused)."""
        names = {m[1] for k in self.storage.list(f"{self.prefix}/") if (m := self._card_key.match(k))}
        return {v: "candidate" for v in sorted(names, key=lambda v: int(v.removeprefix("v")))}

    def list(self) -> list[ModelVersion]:
        stages = self._stages()
        out = []
        for version in sorted(stages["versions"], key=lambda v: int(v.removeprefix("v"))):
            out.append(self.get(version, stages))
        return out

    def get(self, version: str, stages: dict | None = None) -> ModelVersion:
        stages = stages or self._stages()
        if version not in stages["versions"]:
            known = ", ".join(stages["versions"]) or "none"
            raise ModelNotFoundError(f"model {self.model!r} has no version {version!r} (known: {known})")
        card = json.loads(self.storage.read_text(layout.model_card_key(self.model, version)))
        return ModelVersion(self.model, version, stages["versions"][version], card)

    def champion(self) -> ModelVersion | None:
        stages = self._stages()
        return self.get(stages["champion"], stages) if stages["champion"] else None

    def servable(self, pinned: str | None = None) -> str:
        """The version a server would serve: ``pinned`` if it exists, else the champion.

        Raises ModelNotFoundError (naming the known versions) or NoChampionError (suggesting only what works:
        ``--version`` when there is a version to pin). Cheap on purpose: the CLI calls it before importing the
        serving stack, so a registry without a champion is said in well under a second."""
        if pinned:
            self.get(pinned)
            return pinned
        champion = self.champion()
        if champion is None:
            versions = [mv.version for mv in self.list()]
            hint = "run the training loop first (`kfloop run`)"
            if versions:
                pin = " | ".join(versions)
                hint += f", promote a version (`kfloop models promote VERSION`), or pass --version {pin}"
            raise NoChampionError(f"model {self.model!r} has no champion yet: {hint}")
        return champion.version

    def history(self) -> list[dict]:
        return self._stages()["history"]

    # --- writing ---------------------------------------------------------------------------------
    def register(self, local_dir: Path, card: dict) -> ModelVersion:
        """Store every file of ``local_dir`` as a new candidate version; ``card['files']`` gets checksums.
        Uploads go to a staging prefix before the lease is taken; under it, the version is claimed and
        committed from staging, so concurrent registrations get distinct, intact versions."""
        files = {
            p.relative_to(local_dir).as_posix(): file_sha256(p) for p in sorted(local_dir.rglob("*")) if p.is_file()
        }
        staging = f"{self.prefix}/_staging/{secrets.token_hex(8)}"
        try:
            for rel in files:
                self.storage.upload_file(local_dir / rel, f"{staging}/{rel}")
            with self._lease(self.owner or str(card.get("pipeline_run") or "")) as held:
                stages = self._stages()
                self._sweep_uncommitted(held)
                version = self._claim_version(stages, held)
                for rel in files:
                    self.storage.copy(f"{staging}/{rel}", f"{layout.model_version_prefix(self.model, version)}/{rel}")
                full = {**card, "model": self.model, "version": version, "files": files, "registered": _now()}
                body = json.dumps(full, indent=2, default=str).encode()
                held.check()
                card_key = layout.model_card_key(self.model, version)
                if not self.storage.create_exclusive(card_key, body) and not self._is(card_key, body):  # the commit
                    raise StorageError(f"{self.storage.uri(self.prefix)}/{version}: exists already; immutable")
                stages["versions"][version] = "candidate"
                stages["history"].append({"at": _now(), "version": version, "event": "registered"})
                self._write_stages(stages, held)
        finally:
            self._delete_prefix(staging)
        self._sweep_staging()
        return ModelVersion(self.model, version, "candidate", full)

    def _is(self, key: str, body: bytes) -> bool:
        """Whether ``key`` holds exactly ``body``: a create refused only because the client retried a PUT
        that had already succeeded (its answer was lost) did commit."""
        try:
            return self.storage.read_bytes(key) == body
        except FileNotFoundError:
            return False

    def _claim_version(self, stages: dict, held: Lease) -> str:
        """The next version number, claimed with an exclusive create: a number is never handed out twice,
        even to a holder whose lease was taken over, and never reused after a failed registration."""
        claimed = [k.rsplit("/", 1)[-1] for k in self.storage.list(f"{self.prefix}/_claims/")]
        taken = set(stages["versions"]) | set(self._version_folders()) | set(claimed)
        n = max((int(v.removeprefix("v")) for v in taken if re.fullmatch(r"v\d+", v)), default=0) + 1
        claim = json.dumps({"token": held.token, "owner": held.owner, "at": _now()}).encode()
        while not self.storage.create_exclusive(f"{self.prefix}/_claims/v{n}", claim):
            n += 1
        return f"v{n}"

    def _write_stages(self, stages: dict, held: Lease) -> None:
        held.check()  # a holder that was taken over must not overwrite its successor's stages
        self.storage.write_text(layout.stages_key(self.model), json.dumps(stages, indent=2))

    def _delete_prefix(self, prefix: str) -> None:
        with contextlib.suppress(StorageError, OSError):
            for key in self.storage.list(f"{prefix}/"):
                self.storage.delete(key)

    def _sweep_uncommitted(self, held: Lease) -> None:
        """Remove the files of versions whose registration died between its copies and its card (the commit
        point): a folder without ``model.json`` claimed under an earlier lease token. Readers never saw such a
        version (no card); its number stays claimed. Runs under the lease, so no live registration is touched."""
        folders: dict[str, list[str]] = {}
        for key in self.storage.list(f"{self.prefix}/"):
            parts = key[len(self.prefix) + 1 :].split("/", 1)
            if len(parts) == 2 and re.fullmatch(r"v\d+", parts[0]):
                folders.setdefault(parts[0], []).append(key)
        for version, keys in folders.items():
            if layout.model_card_key(self.model, version) in keys:
                continue
            try:
                claim = json.loads(self.storage.read_text(f"{self.prefix}/_claims/{version}"))
            except (FileNotFoundError, ValueError):
                claim = {}
            if claim.get("token") == held.token:
                continue  # ours, being written
            for key in keys:
                self.storage.delete(key)

    def _sweep_staging(self) -> None:
        """Remove staging prefixes of registrations that died more than a day ago (best effort)."""
        cutoff = datetime.now(UTC) - STALE_STAGING
        firsts: dict[str, str] = {}
        with contextlib.suppress(StorageError, OSError):
            for key in self.storage.list(f"{self.prefix}/_staging/"):
                firsts.setdefault(key.split("/")[3], key)
        for run, key in firsts.items():
            with contextlib.suppress(StorageError, OSError):
                if self.storage.modified(key) < cutoff:
                    self._delete_prefix(f"{self.prefix}/_staging/{run}")

    def verify(self, version: str) -> None:
        """Raise CorruptModelError unless every file of ``version`` is present with its checksum."""
        with tempfile.TemporaryDirectory(prefix="kfloop-verify-") as tmp:
            self.fetch(version, Path(tmp))

    def _audit(self, action: str, version: str, stages: dict, **details: str | None) -> None:
        """Append the stage change to the audit trail before ``stages.json`` is written (under the lease): if the
        append fails, so does the change (:mod:`kfloop.audit.events`)."""
        audit_events.model_stage(self.storage, action, self.model, version, stages["versions"][version], **details)

    def promote(self, version: str, reason: str) -> ModelVersion:
        """Make ``version`` the champion; the previous champion is archived. Atomic under the lease; a
        version whose files do not verify is refused (it could not be served)."""
        self.verify(version)
        with self._lease() as held:
            stages = self._stages()
            self.get(version, stages)
            previous = stages["champion"]
            if previous == version:
                return self.get(version, stages)  # already champion: nothing to record
            self._audit("model.promote", version, stages, previous=previous, reason=reason)  # fails: no change
            if previous and previous != version:
                stages["versions"][previous] = "archived"
            stages["versions"][version] = "champion"
            stages["champion"] = version
            stages["history"].append(
                {"at": _now(), "version": version, "event": "promoted", "previous": previous, "reason": reason}
            )
            self._write_stages(stages, held)
        return self.get(version)

    def reject(self, version: str, reason: str) -> None:
        """Mark a candidate the gate turned down ``rejected``, not ``archived``: it never served, so it is no
        rollback target (a champion is only replaced by promote/rollback; a rejected version can still be
        promoted by hand)."""
        with self._lease() as held:
            stages = self._stages()
            self.get(version, stages)
            if stages["versions"][version] != "candidate":
                return
            self._audit("model.reject", version, stages, reason=reason)
            stages["versions"][version] = "rejected"
            stages["history"].append({"at": _now(), "version": version, "event": "rejected", "reason": reason})
            self._write_stages(stages, held)

    def _rollback_target(self, stages: dict) -> tuple[str, str, list[dict]]:
        """(current champion, the one before it, the promotion history)."""
        current = stages["champion"]
        promoted = [h for h in stages["history"] if h["event"] in ("promoted", "rolled back")]
        target = promoted[-1].get("previous") if promoted else None
        if not current or not target or target == current:
            raise ModelNotFoundError(f"model {self.model!r}: no previous champion to roll back to")
        return current, target, promoted

    def rollback(self, reason: str) -> ModelVersion:
        """Restore the champion before the current one (the current one is archived). The target is
        verified before the lease is taken (a download must not hold it), and again if it changed."""
        verified = self._rollback_target(self._stages())[1]
        self.verify(verified)
        with self._lease() as held:
            stages = self._stages()
            current, target, promoted = self._rollback_target(stages)
            if target != verified:
                self.verify(target)
            self._audit("model.rollback", target, stages, previous=current, reason=reason)
            stages["versions"][current] = "archived"
            stages["versions"][target] = "champion"
            stages["champion"] = target
            prior = next((h.get("previous") for h in reversed(promoted[:-1]) if h["version"] == target), None)
            stages["history"].append(
                {
                    "at": _now(),
                    "version": target,
                    "event": "rolled back",
                    "previous": prior,
                    "from": current,
                    "reason": reason,
                }
            )
            self._write_stages(stages, held)
        return self.get(target)

    def read_file(self, version: str, rel: str) -> bytes:
        """One file of a version, checked against the card's checksum (a reader that needs one file, such as
        the drift check's reference profile, need not download the model)."""
        mv = self.get(version)
        digest = mv.card.get("files", {}).get(rel)
        key = f"{layout.model_version_prefix(self.model, version)}/{rel}"
        if digest is None:
            raise CorruptModelError(f"{self.storage.uri(key)}: not a file of {self.model} {version} (card has none)")
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError as err:
            raise CorruptModelError(f"{self.storage.uri(key)}: missing ({err})") from err
        found = hashlib.sha256(data).hexdigest()
        if found != digest:
            raise CorruptModelError(
                f"{self.storage.uri(key)}: checksum mismatch (expected {digest[:12]}…, found {found[:12]}…): "
                f"{rel} is corrupted"
            )
        return data

    def fetch(self, version: str, dest: Path) -> Path:
        """Download a version's files into ``dest`` and verify each checksum; returns ``dest``."""
        mv = self.get(version)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, digest in mv.card["files"].items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            key = f"{layout.model_version_prefix(self.model, version)}/{rel}"
            try:
                self.storage.download_file(key, target)
            except FileNotFoundError as err:  # a StorageError (storage down) is not the version's fault
                raise CorruptModelError(f"{self.storage.uri(key)}: missing ({err})") from err
            if file_sha256(target) != digest:
                raise CorruptModelError(
                    f"{self.storage.uri(key)}: checksum mismatch (expected {digest[:12]}…, "
                    f"found {file_sha256(target)[:12]}…): the model file is corrupted"
                )
        return dest
