"""The hash chain: verify names the first bad record for each kind of tampering; concurrent appends from several
processes (real files, and real S3 through moto_server) leave one unbroken chain with no number taken twice."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from kfloop import layout
from kfloop.audit import append, read, verify
from kfloop.audit.chain import GENESIS, digest
from kfloop.storage import LocalStorage, S3Storage, Storage
from tests.conftest import S3_CREDS

ACTIONS = ("ingest.commit", "model.promote", "model.rollback", "deploy.apply", "config.change")


def _log(storage: Storage, n: int = 6) -> list[dict]:
    """``n`` records with distinct content, a minute apart from 2026-01-01."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        append(
            storage,
            ACTIONS[i % len(ACTIONS)],
            {"model": "m1" if i % 2 else "m2", "version": f"v{i}"},
            {"i": i},
            actor=f"user:u{i}",
            clock=lambda i=i: t0 + timedelta(minutes=i),
        )
        for i in range(n)
    ]


def _path(root: Path, seq: int) -> Path:
    return root / layout.audit_log_key(seq)


def _rewrite(root: Path, seq: int, change: dict, *, rehash: bool) -> None:
    record = json.loads(_path(root, seq).read_text())
    record.update(change)
    if rehash:
        record["hash"] = digest(record)
    _path(root, seq).write_text(json.dumps(record))


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, LocalStorage, list[dict]]:
    storage = LocalStorage(tmp_path)
    return tmp_path, storage, _log(storage)


def test_an_intact_log_verifies_and_reports_its_head(log) -> None:
    _, storage, records = log
    verdict = verify(storage)
    assert verdict.ok and verdict.records == 6 and verdict.head == records[-1]["hash"]
    assert [r["prev"] for r in records] == [GENESIS, *(r["hash"] for r in records[:-1])]
    assert verify(storage, expect_head=records[-1]["hash"]).ok
    assert verify(LocalStorage(log[0] / "empty")).ok  # nothing appended yet: nothing to break


def test_a_changed_record_is_named(log) -> None:
    root, storage, _ = log
    _rewrite(root, 3, {"actor": "user:someone-else"}, rehash=False)
    verdict = verify(storage)
    assert (verdict.ok, verdict.first_bad, verdict.records) == (False, 3, 2)
    assert "record 3 was changed" in verdict.problem


def test_a_record_removed_in_the_middle_is_named(log) -> None:
    root, storage, _ = log
    _path(root, 4).unlink()
    verdict = verify(storage)
    assert (verdict.first_bad, verdict.records) == (4, 3)
    assert "record 4 is missing (removed)" in verdict.problem


def test_a_cut_off_tail_is_named(log) -> None:
    root, storage, _ = log
    _path(root, 5).unlink()
    _path(root, 6).unlink()
    verdict = verify(storage)
    assert (verdict.first_bad, verdict.records) == (5, 4)
    assert "records 5 to 6 are missing: the log was cut off" in verdict.problem


def test_a_tail_cut_off_with_its_head_is_noticed(log) -> None:
    root, storage, _ = log
    _path(root, 6).unlink()
    (root / layout.audit_head_key()).unlink()
    verdict = verify(storage)
    assert not verdict.ok and "_head.json is missing" in verdict.problem


def test_two_swapped_records_are_named(log) -> None:
    root, storage, _ = log
    two, three = _path(root, 2).read_bytes(), _path(root, 3).read_bytes()
    _path(root, 2).write_bytes(three)
    _path(root, 3).write_bytes(two)
    verdict = verify(storage)
    assert (verdict.first_bad, verdict.records) == (2, 1)
    assert "record 2 holds record 3's content" in verdict.problem


def test_records_swapped_renumbered_and_rehashed_are_named(log) -> None:
    root, storage, _ = log
    two, three = json.loads(_path(root, 2).read_text()), json.loads(_path(root, 3).read_text())
    for seq, record in ((2, three), (3, two)):
        record["seq"] = seq
        record["hash"] = digest(record)
        _path(root, seq).write_text(json.dumps(record))
    verdict = verify(storage)
    assert (verdict.first_bad, verdict.records) == (2, 1)
    assert "record 2 was moved: it follows record 3 (then numbered 2), not record 1" in verdict.problem


def test_a_rehashed_forgery_in_the_middle_is_named(log) -> None:
    root, storage, _ = log
    _rewrite(root, 3, {"details": {"i": 99}}, rehash=True)  # self-consistent: only record 4's prev gives it away
    verdict = verify(storage)
    assert (verdict.first_bad, verdict.records) == (3, 2)
    assert "record 3 was replaced" in verdict.problem


def test_a_rehashed_forgery_of_the_newest_record_is_named(log) -> None:
    root, storage, records = log
    _rewrite(root, 6, {"actor": "user:nobody"}, rehash=True)
    verdict = verify(storage)
    assert verdict.first_bad == 6 and "not the record the head points to" in verdict.problem
    # with the head rewritten too, only a head hash kept elsewhere catches it
    forged = json.loads(_path(root, 6).read_text())["hash"]
    (root / layout.audit_head_key()).write_text(json.dumps({"seq": 6, "hash": forged}))
    assert verify(storage).ok
    verdict = verify(storage, expect_head=records[-1]["hash"])
    assert not verdict.ok and f"not the expected {records[-1]['hash']}" in verdict.problem


def test_an_unreadable_record_is_named(log) -> None:
    root, storage, _ = log
    _path(root, 2).write_text("{not json")
    verdict = verify(storage)
    assert verdict.first_bad == 2 and "record 2 is unreadable" in verdict.problem


def test_a_kept_head_still_verifies_after_later_appends_but_not_after_a_healed_cut(log) -> None:
    root, storage, records = log
    assert verify(storage, expect_head=GENESIS).ok  # the head of the empty log, which every log extends
    later = append(storage, "model.promote", {"model": "m1", "version": "v7"}, actor="user:later")
    assert verify(storage, expect_head=records[-1]["hash"]).ok  # honest appends since the head was kept
    # the newest record removed with its head: the next append continues the chain from record 6, and the
    # log checks out again; only the head kept elsewhere (record 7's hash) shows the cut
    _path(root, 7).unlink()
    (root / layout.audit_head_key()).unlink()
    append(storage, "model.promote", {"model": "m1", "version": "v8"}, actor="user:later")
    assert verify(storage).ok
    verdict = verify(storage, expect_head=later["hash"])
    assert not verdict.ok and f"not the expected {later['hash']}" in verdict.problem


def test_a_head_rewritten_to_an_earlier_record_is_named(log) -> None:
    root, storage, records = log
    _path(root, 6).unlink()  # the tail cut, and the head moved back (with a made-up hash) to hide it
    (root / layout.audit_head_key()).write_text(json.dumps({"seq": 3, "hash": "f" * 64}))
    verdict = verify(storage)
    assert verdict.first_bad == 3 and "names record 3 with another hash" in verdict.problem
    # a head behind the newest record but naming it rightly is what a reader sees while others append
    (root / layout.audit_head_key()).write_text(json.dumps({"seq": 3, "hash": records[2]["hash"]}))
    assert verify(storage).ok


def test_a_deleted_log_is_noticed_through_the_config_record(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _log(storage, 3)
    (tmp_path / layout.audit_config_last_key()).parent.mkdir(parents=True)
    (tmp_path / layout.audit_config_last_key()).write_text(json.dumps({"hash": "h", "seq": 2}))
    assert verify(storage).ok
    for seq in (1, 2, 3):
        _path(tmp_path, seq).unlink()
    (tmp_path / layout.audit_head_key()).unlink()
    verdict = verify(storage)
    assert verdict.first_bad == 1 and "records 1 to 2 are missing" in verdict.problem


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("000000000004.json", '{"actor": "user:forger", ', "record 4 is unreadable (ValueError: key 'actor'"),
        ("000000000004.json", "[4]", "record 4 is not a record (a JSON list)"),
        ("000000000004.json", "seq-as-text", "record 4 was changed: its number is '4'"),
        ("4.json", None, None),  # copies under other names are not records: ignored, never a crash
        ("\u00b2.json", None, None),
        ("sub/000000000004.json", None, None),
    ],
)
def test_odd_objects_in_the_log(log, name: str, content: str | None, problem: str | None) -> None:
    root, storage, _ = log
    original = _path(root, 4).read_text()
    target = root / layout.audit_log_prefix() / name.encode().decode("unicode_escape")
    target.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        target.write_text(original)
    elif content == "seq-as-text":
        target.write_text(json.dumps({**json.loads(original), "seq": "4"}))
    elif content.endswith(", "):
        target.write_text(original.replace("{", content, 1))  # a second "actor" key
    else:
        target.write_text(content)
    verdict = verify(storage)
    if problem is None:
        assert verdict.ok and verdict.records == 6 and len(read(storage)) == 6
    else:
        assert verdict.first_bad == 4 and problem in verdict.problem


def test_values_json_cannot_hold_exactly_are_hashed_as_stored(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    record = append(storage, "ingest.commit", {"dataset": "d"}, {"path": tmp_path, "rows": (1, 2), 7: "int key"})
    assert record["details"] == {"path": str(tmp_path), "rows": [1, 2], "7": "int key"}
    assert verify(storage).ok


def test_read_filters_by_time_model_and_action(log) -> None:
    _, storage, _ = log
    assert [r["seq"] for r in read(storage, model="m1")] == [2, 4, 6]
    assert [r["seq"] for r in read(storage, actions=["model"])] == [2, 3]
    assert [r["seq"] for r in read(storage, actions=["model.rollback", "config.change"])] == [3, 5]
    assert [r["seq"] for r in read(storage, since=datetime(2026, 1, 1, 0, 4))] == [5, 6]  # naive: UTC
    assert read(storage, since=datetime(2026, 1, 2, tzinfo=UTC), model="m1") == []


# --- concurrency -------------------------------------------------------------------------------------------

WRITERS, EACH = 4, 12


def _append_many(make: tuple, writer: int, n: int) -> None:
    kind, arg = make
    if kind == "local":
        storage: Storage = LocalStorage(Path(arg))
    else:
        endpoint, bucket = arg
        client = Minio(endpoint, access_key=S3_CREDS.access_key, secret_key=S3_CREDS.secret_key, secure=False)
        storage = S3Storage(client, bucket, prefix="ws")
    for i in range(n):
        append(storage, "test.append", {"writer": writer}, {"i": i}, actor=f"user:w{writer}")


def _race(make: tuple, storage: Storage) -> None:
    """The writers append at once; meanwhile verify, run again and again, never reports a break (no false alarm
    while a head is being moved)."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(make, w, EACH)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        verdict = verify(storage)
        assert verdict.ok, verdict.problem
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0


def _assert_one_chain(storage: Storage) -> None:
    verdict = verify(storage)
    assert verdict.ok, verdict.problem
    records = read(storage)
    assert verdict.records == len(records) == WRITERS * EACH
    assert [r["seq"] for r in records] == list(range(1, WRITERS * EACH + 1))  # no number taken twice, no gap
    mine = {(r["subject"]["writer"], r["details"]["i"]) for r in records}
    assert mine == {(w, i) for w in range(WRITERS) for i in range(EACH)}  # every append landed, once
    head = json.loads(storage.read_text(layout.audit_head_key()))
    assert (head["seq"], head["hash"]) == (records[-1]["seq"], records[-1]["hash"])  # the head never went back


def test_concurrent_appends_from_processes_make_one_chain(tmp_path: Path) -> None:
    _race(("local", str(tmp_path)), LocalStorage(tmp_path))
    _assert_one_chain(LocalStorage(tmp_path))


@pytest.mark.s3
def test_concurrent_appends_on_s3_make_one_chain(moto_endpoint: str, s3_storage: S3Storage) -> None:
    _race(("s3", (moto_endpoint, s3_storage.bucket)), s3_storage)
    _assert_one_chain(s3_storage)
    key = layout.audit_log_key(5)  # tampering is caught on S3 as on disk
    record = json.loads(s3_storage.read_text(key))
    s3_storage.write_text(key, json.dumps({**record, "actor": "user:mallory"}))
    assert verify(s3_storage).first_bad == 5
