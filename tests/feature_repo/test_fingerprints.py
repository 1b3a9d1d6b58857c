"""Per-date fingerprints of clean rows: what counts as a change before a view's watermark, and what does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from kfloop.feature_repo.fingerprints import CleanChanges, by_date, compare, file_signature, fingerprint
from kfloop.lake import DataFile, Manifest

UNTIL = datetime(2026, 1, 3, 12, tzinfo=UTC)  # the view's watermark


def rows(*items: tuple[str, int, float]) -> pa.Table:
    """Rows of (entity, day of January 2026, hours from noon)."""
    return pa.table(
        {
            "customer_id": [e for e, _, _ in items],
            "event_timestamp": pa.array(
                [datetime(2026, 1, d, 12, tzinfo=UTC).replace(hour=int(12 + h)) for _, d, h in items],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def data_file(date: str, table: pa.Table, sha: str) -> DataFile:
    ts = table.column("event_timestamp")
    lo, hi = (min(ts.to_pylist()), max(ts.to_pylist()))
    return DataFile(f"data/{date}/{sha}", table.num_rows, 0, sha, date, "run", lo.isoformat(), hi.isoformat())


def stored(tables: dict[str, pa.Table]) -> dict:
    return {
        d: fingerprint(t, "event_timestamp", file_signature([data_file(d, t, d)]), UNTIL) for d, t in tables.items()
    }


BEFORE = {
    "2026-01-01": rows(("c-1", 1, 0), ("c-2", 1, 1)),
    "2026-01-02": rows(("c-1", 2, 0)),
    "2026-01-03": rows(("c-2", 3, -1), ("c-1", 3, 0)),  # the watermark's day: 11:00 and 12:00
}


def check(changes: dict[str, tuple[pa.Table, str] | None]) -> CleanChanges:
    """Compare BEFORE with the clean dataset now: BEFORE's files, with ``changes`` (date → (rows, file sha) or
    None for a vanished date) applied."""
    now = {d: (t, d) for d, t in BEFORE.items()} | changes
    files = [data_file(d, t, sha) for d, part in now.items() if part for t, sha in [part]]
    read = {d: part[0] for d, part in now.items() if part}
    return compare(
        stored(BEFORE), by_date(Manifest("clean", {}, "", files)), UNTIL, read.__getitem__, "event_timestamp"
    )


def test_same_files_are_not_read() -> None:
    def no_read(date: str) -> pa.Table:
        raise AssertionError(f"read {date}")

    files = [data_file(d, t, d) for d, t in BEFORE.items()]
    changes = compare(stored(BEFORE), by_date(Manifest("clean", {}, "", files)), UNTIL, no_read, "event_timestamp")
    assert (changes.earliest, changes.changed, changes.rehashed) == (None, (), 0)


def test_rewritten_or_reordered_rows_and_rows_after_the_watermark_are_no_change() -> None:
    day1 = BEFORE["2026-01-01"].take([1, 0])
    day3 = pa.concat_tables([rows(("c-3", 3, 5)), BEFORE["2026-01-03"].take([1, 0])])  # 17:00: after the watermark
    later = rows(("c-1", 4, 0))  # a new day after the watermark
    changes = check({"2026-01-01": (day1, "x1"), "2026-01-03": (day3, "x3"), "2026-01-04": (later, "x4")})
    assert (changes.earliest, changes.changed, changes.rehashed) == (None, (), 2)
    assert changes.unchanged["2026-01-01"].files == file_signature([data_file("2026-01-01", day1, "x1")])
    assert changes.unchanged["2026-01-03"].files == file_signature([data_file("2026-01-03", day3, "x3")])
    assert "2026-01-04" not in changes.unchanged


def test_removed_vanished_or_backfilled_rows_change_from_their_day() -> None:
    fewer = check({"2026-01-03": (BEFORE["2026-01-03"].slice(1), "x3")})
    assert (fewer.changed, fewer.earliest) == (("2026-01-03",), datetime(2026, 1, 3, 11, tzinfo=UTC))
    vanished = check({"2026-01-02": None})
    assert (vanished.changed, vanished.earliest) == (("2026-01-02",), datetime(2026, 1, 2, 12, tzinfo=UTC))
    backfill = check({"2026-01-02": (rows(("c-1", 2, 0), ("c-4", 2, -3)), "x2")})
    assert (backfill.changed, backfill.earliest) == (("2026-01-02",), datetime(2026, 1, 2, 9, tzinfo=UTC))
    new_day = check({"2025-12-31": (rows(("c-5", 1, -12)), "x0")})  # 2026-01-01 00:00, filed under a new date
    assert new_day.changed == ("2025-12-31",)
