"""Model registry: versions, stages, racing promotions, rollback, checksums — local and S3 (moto)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from kfloop.registry import ModelRegistry
from kfloop.registry.store import CorruptModelError, ModelNotFoundError
from kfloop.storage import LocalStorage, Storage
from kfloop.storage.lease import holder


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "ws")
    return request.getfixturevalue("s3_storage")


def _model_dir(tmp_path: Path, name: str, payload: bytes) -> Path:
    d = tmp_path / name
    (d / "saved_model").mkdir(parents=True)
    (d / "model.pt").write_bytes(payload)
    (d / "saved_model" / "variables.bin").write_bytes(payload * 2)
    (d / "preprocess.json").write_text('{"numeric": []}')
    return d


def _register(reg: ModelRegistry, tmp_path: Path, n: int, auc: float = 0.9) -> str:
    card = {"framework": "pytorch", "metrics": {"test": {"roc_auc": auc}}, "training_set": {"content_hash": "abc"}}
    return reg.register(_model_dir(tmp_path, f"m{n}", f"weights-{n}".encode()), card).version


def test_register_list_and_card(storage: Storage, tmp_path: Path) -> None:
    reg = ModelRegistry(storage, "fraud")
    assert reg.list() == [] and reg.champion() is None
    v1, v2 = _register(reg, tmp_path, 1), _register(reg, tmp_path, 2)
    assert (v1, v2) == ("v1", "v2")
    versions = reg.list()
    assert [(m.version, m.stage) for m in versions] == [("v1", "candidate"), ("v2", "candidate")]
    card = versions[0].card
    assert set(card["files"]) == {"model.pt", "preprocess.json", "saved_model/variables.bin"}
    assert card["training_set"] == {"content_hash": "abc"} and card["model"] == "fraud"


def test_promote_archives_the_previous_champion(storage: Storage, tmp_path: Path) -> None:
    reg = ModelRegistry(storage, "fraud")
    v1, v2 = _register(reg, tmp_path, 1), _register(reg, tmp_path, 2)
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    assert reg.champion().version == v2  # type: ignore[union-attr]
    assert {m.version: m.stage for m in reg.list()} == {v1: "archived", v2: "champion"}
    assert [h["event"] for h in reg.history()] == ["registered", "registered", "promoted", "promoted"]


def test_rollback_restores_the_previous_champion(storage: Storage, tmp_path: Path) -> None:
    reg = ModelRegistry(storage, "fraud")
    v1, v2, v3 = (_register(reg, tmp_path, n) for n in (1, 2, 3))
    for v in (v1, v2, v3):
        reg.promote(v, "newer")
    assert reg.rollback("v3 misbehaves").version == v2
    assert reg.rollback("v2 too").version == v1
    assert {m.version: m.stage for m in reg.list()} == {v1: "champion", v2: "archived", v3: "archived"}
    with pytest.raises(ModelNotFoundError, match="no previous champion"):
        reg.rollback("nothing left")


def test_a_rejected_candidate_is_rejected_and_a_replaced_champion_archived(storage: Storage, tmp_path: Path) -> None:
    reg = ModelRegistry(storage, "fraud")
    v1, v2, v3 = (_register(reg, tmp_path, n) for n in (1, 2, 3))
    reg.promote(v1, "first")
    reg.reject(v2, "worse than the champion")
    assert {m.version: m.stage for m in reg.list()} == {v1: "champion", v2: "rejected", v3: "candidate"}
    assert reg.history()[-1] == {**reg.history()[-1], "version": v2, "event": "rejected"}
    reg.reject(v1, "a champion is not rejected")  # only candidates are
    reg.promote(v3, "better")
    assert {m.version: m.stage for m in reg.list()} == {v1: "archived", v2: "rejected", v3: "champion"}
    assert reg.rollback("v3 misbehaves").version == v1  # never to the rejected one
    reg.promote(v2, "overruled by hand")  # a rejected version can still be promoted
    reg.promote(v3, "back")
    assert {m.version: m.stage for m in reg.list()} == {v1: "archived", v2: "archived", v3: "champion"}


def test_racing_promotions_leave_exactly_one_champion(storage: Storage, tmp_path: Path) -> None:
    reg = ModelRegistry(storage, "fraud")
    versions = [_register(reg, tmp_path, n) for n in range(1, 7)]
    barrier = threading.Barrier(len(versions))
    errors: list[BaseException] = []

    def promote(v: str) -> None:
        try:
            barrier.wait()
            ModelRegistry(storage, "fraud").promote(v, "race")
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stages = {m.version: m.stage for m in reg.list()}
    assert list(stages.values()).count("champion") == 1
    champion = reg.champion().version  # type: ignore[union-attr]
    assert stages[champion] == "champion"
    promotions = [h for h in reg.history() if h["event"] == "promoted"]
    assert len(promotions) == len(versions) and promotions[-1]["version"] == champion
    assert holder(storage, "registry/fraud/_lease").released  # type: ignore[union-attr]


def test_fetch_verifies_checksums(storage: Storage, tmp_path: Path) -> None:
    reg = ModelRegistry(storage, "fraud")
    v1 = _register(reg, tmp_path, 1)
    got = reg.fetch(v1, tmp_path / "out")
    assert (got / "model.pt").read_bytes() == b"weights-1"
    storage.write_bytes(f"registry/fraud/{v1}/model.pt", b"weights-1 but tampered")
    with pytest.raises(CorruptModelError, match=r"model\.pt: checksum mismatch"):
        reg.fetch(v1, tmp_path / "out2")
    storage.delete(f"registry/fraud/{v1}/preprocess.json")
    storage.write_bytes(f"registry/fraud/{v1}/model.pt", b"weights-1")
    with pytest.raises(CorruptModelError, match=r"preprocess\.json: missing"):
        reg.fetch(v1, tmp_path / "out3")


def test_unknown_version_is_named(storage: Storage) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no version 'v9' \(known: none\)"):
        ModelRegistry(storage, "fraud").promote("v9", "x")


def test_stale_lease_is_taken_over(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    dead = "registry/fraud/_lease/000000000001"
    storage.write_text(dead, '{"owner": "dead-run", "host": "h", "pid": 1, "since": "2000-01-01T00:00:00+00:00"}')
    os.utime(storage.local_path(dead), (1, 1))  # not renewed for decades
    reg = ModelRegistry(storage, "fraud")
    v1 = _register(reg, tmp_path, 1)  # would wait forever on a dead holder's lease
    assert reg.promote(v1, "ok").stage == "champion"


def test_concurrent_registrations_with_slow_uploads_get_two_intact_versions(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads: dict[str, list[float]] = {}
    real_upload = storage.upload_file

    def slow_upload(local_path: Path, key: str) -> None:
        uploads.setdefault(threading.current_thread().name, []).append(time.monotonic())
        time.sleep(0.3)
        real_upload(local_path, key)

    monkeypatch.setattr(storage, "upload_file", slow_upload)
    reg = ModelRegistry(storage, "fraud")
    dirs = {n: _model_dir(tmp_path, f"m{n}", f"weights-{n}".encode()) for n in (1, 2)}
    got: dict[int, str] = {}
    errors: list[BaseException] = []

    def register(n: int) -> None:
        try:
            got[n] = reg.register(dirs[n], {"framework": "pytorch"}).version
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=register, args=(n,), name=f"reg{n}") for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got.values()) == ["v1", "v2"]
    for n, version in got.items():
        reg.verify(version)
        assert (reg.fetch(version, tmp_path / f"out{n}") / "model.pt").read_bytes() == f"weights-{n}".encode()
    first, second = (sorted(ts) for ts in uploads.values())
    assert first[0] < second[-1] and second[0] < first[-1]  # uploads overlapped: no lease held meanwhile
    assert storage.list("registry/fraud/_staging/") == []


def test_a_commit_whose_answer_was_lost_still_registers(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 client retries a PUT whose answer was lost; the retry is refused by the first write."""
    real_create = storage.create_exclusive

    def create_then_lose_the_answer(key: str, data: bytes) -> bool:
        created = real_create(key, data)
        return created and not key.endswith("/model.json")

    monkeypatch.setattr(storage, "create_exclusive", create_then_lose_the_answer)
    reg = ModelRegistry(storage, "fraud")
    assert _register(reg, tmp_path, 1) == "v1"
    assert [mv.version for mv in reg.list()] == ["v1"]


def test_stale_staging_is_swept(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "ws")
    storage.write_bytes("registry/fraud/_staging/dead/model.pt", b"x")
    storage.write_bytes("registry/fraud/_staging/live/model.pt", b"x")
    os.utime(storage.local_path("registry/fraud/_staging/dead/model.pt"), (1, 1))
    _register(ModelRegistry(storage, "fraud"), tmp_path, 1)
    assert storage.list("registry/fraud/_staging/") == ["registry/fraud/_staging/live/model.pt"]


def test_a_registration_killed_before_its_card_leaves_no_files(tmp_path: Path) -> None:
    """Found by the fault soak: a train step killed while its files were copied into ``v2/`` (claimed, no card
    yet) left the folder forever. The next registration removes it; the number stays taken."""
    storage = LocalStorage(tmp_path / "ws")
    reg = ModelRegistry(storage, "fraud")
    _register(reg, tmp_path, 1)
    storage.write_text("registry/fraud/_claims/v2", '{"token": "dead-holder", "owner": "run-2"}')
    storage.write_bytes("registry/fraud/v2/model.pt", b"half")
    storage.write_bytes("registry/fraud/v2/saved_model/variables.bin", b"half")
    assert _register(reg, tmp_path, 3) == "v3"
    assert not storage.list("registry/fraud/v2/")
    assert [v.version for v in reg.list()] == ["v1", "v3"]
    reg.fetch("v3", tmp_path / "out")  # intact
