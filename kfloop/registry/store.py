"""``registry/<model>/<version>/`` holds an exported model, its ``model.json`` card and checksums;
``registry/<model>/stages.json`` says which version is champion and keeps the history.

Versions are immutable once registered. Stage changes happen under a lease, so two promotions racing
leave exactly one champion and a history that records both. Downloads verify every file's SHA-256.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kfloop.errors import KfloopError, StorageError
from kfloop.files import file_sha256
from kfloop.registry.lock import lease
from kfloop.storage import Storage

STAGES = ("candidate", "champion", "archived")


class ModelNotFoundError(KfloopError):
    """No such model or version in the registry."""

    http_status = 404


class CorruptModelError(KfloopError):
    """A model file is missing or its checksum does not match the card."""


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

    def __init__(self, storage: Storage, model: str) -> None:
        self.storage = storage
        self.model = model
        self.prefix = f"registry/{model}"

    # --- reading ---------------------------------------------------------------------------------
    def _stages(self) -> dict:
        key = f"{self.prefix}/stages.json"
        try:
            stages = json.loads(self.storage.read_text(key))
        except FileNotFoundError:
            return {"champion": None, "versions": self._version_folders(), "history": []}
        except ValueError as err:
            raise CorruptModelError(
                f"{self.storage.uri(key)}: not valid JSON ({err}); restore it from history"
            ) from None
        if not isinstance(stages, dict) or not {"champion", "versions", "history"} <= set(stages):
            raise CorruptModelError(f"{self.storage.uri(key)}: expected keys champion, versions, history")
        return stages

    def _version_folders(self) -> dict[str, str]:
        """Versions present on storage (so a lost stages.json never lets a version number be reused)."""
        names = {k.split("/")[2] for k in self.storage.list(f"{self.prefix}/") if k.endswith("/model.json")}
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
        card = json.loads(self.storage.read_text(f"{self.prefix}/{version}/model.json"))
        return ModelVersion(self.model, version, stages["versions"][version], card)

    def champion(self) -> ModelVersion | None:
        stages = self._stages()
        return self.get(stages["champion"], stages) if stages["champion"] else None

    def history(self) -> list[dict]:
        return self._stages()["history"]

    # --- writing ---------------------------------------------------------------------------------
    def register(self, local_dir: Path, card: dict) -> ModelVersion:
        """Store every file of ``local_dir`` as a new candidate version; ``card['files']`` gets checksums."""
        files = {
            p.relative_to(local_dir).as_posix(): file_sha256(p) for p in sorted(local_dir.rglob("*")) if p.is_file()
        }
        with lease(self.storage, f"{self.prefix}/.lock"):
            stages = self._stages()
            taken = set(stages["versions"]) | set(self._version_folders())
            version = f"v{max((int(v.removeprefix('v')) for v in taken), default=0) + 1}"
            for rel in files:
                self.storage.upload_file(local_dir / rel, f"{self.prefix}/{version}/{rel}")
            full = {**card, "model": self.model, "version": version, "files": files, "registered": _now()}
            body = json.dumps(full, indent=2, default=str).encode()
            if not self.storage.create_exclusive(f"{self.prefix}/{version}/model.json", body):
                raise StorageError(f"{self.storage.uri(self.prefix)}/{version}: exists already; versions are immutable")
            stages["versions"][version] = "candidate"
            stages["history"].append({"at": _now(), "version": version, "event": "registered"})
            self.storage.write_text(f"{self.prefix}/stages.json", json.dumps(stages, indent=2))
        return ModelVersion(self.model, version, "candidate", full)

    def verify(self, version: str) -> None:
        """Raise CorruptModelError unless every file of ``version`` is present with its checksum."""
        with tempfile.TemporaryDirectory(prefix="kfloop-verify-") as tmp:
            self.fetch(version, Path(tmp))

    def promote(self, version: str, reason: str) -> ModelVersion:
        """Make ``version`` the champion; the previous champion is archived. Atomic under the lease; a
        version whose files do not verify is refused (it could not be served)."""
        self.verify(version)
        with lease(self.storage, f"{self.prefix}/.lock"):
            stages = self._stages()
            self.get(version, stages)
            previous = stages["champion"]
            if previous == version:
                return self.get(version, stages)  # already champion: nothing to record
            if previous and previous != version:
                stages["versions"][previous] = "archived"
            stages["versions"][version] = "champion"
            stages["champion"] = version
            stages["history"].append(
                {"at": _now(), "version": version, "event": "promoted", "previous": previous, "reason": reason}
            )
            self.storage.write_text(f"{self.prefix}/stages.json", json.dumps(stages, indent=2))
        return self.get(version)

    def archive(self, version: str, reason: str) -> None:
        """Retire a candidate the gate rejected (a champion is only replaced by promote/rollback)."""
        with lease(self.storage, f"{self.prefix}/.lock"):
            stages = self._stages()
            self.get(version, stages)
            if stages["versions"][version] != "candidate":
                return
            stages["versions"][version] = "archived"
            stages["history"].append({"at": _now(), "version": version, "event": "rejected", "reason": reason})
            self.storage.write_text(f"{self.prefix}/stages.json", json.dumps(stages, indent=2))

    def rollback(self, reason: str) -> ModelVersion:
        """Restore the champion before the current one (the current one is archived)."""
        with lease(self.storage, f"{self.prefix}/.lock"):
            stages = self._stages()
            current = stages["champion"]
            promoted = [h for h in stages["history"] if h["event"] in ("promoted", "rolled back")]
            if not current or not promoted or not promoted[-1].get("previous"):
                raise ModelNotFoundError(f"model {self.model!r}: no previous champion to roll back to")
            target = promoted[-1]["previous"]
            if target == current:
                raise ModelNotFoundError(f"model {self.model!r}: no previous champion to roll back to")
            self.verify(target)
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
            self.storage.write_text(f"{self.prefix}/stages.json", json.dumps(stages, indent=2))
        return self.get(target)

    def fetch(self, version: str, dest: Path) -> Path:
        """Download a version's files into ``dest`` and verify each checksum; returns ``dest``."""
        mv = self.get(version)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, digest in mv.card["files"].items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            key = f"{self.prefix}/{version}/{rel}"
            try:
                self.storage.download_file(key, target)
            except (FileNotFoundError, StorageError) as err:
                raise CorruptModelError(f"{self.storage.uri(key)}: missing ({err})") from None
            if file_sha256(target) != digest:
                raise CorruptModelError(
                    f"{self.storage.uri(key)}: checksum mismatch (expected {digest[:12]}…, "
                    f"found {file_sha256(target)[:12]}…): the model file is corrupted"
                )
        return dest
