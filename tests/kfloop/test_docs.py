"""README.md's generated blocks (config reference, error statuses) match the code they are generated from."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfloop.docs import BLOCKS, REGENERATE, markers, stale_blocks, write_blocks
from kfloop.errors import STATUSES, KfloopError, status_of, status_table
from tests.conftest import REPO


def test_every_generated_block_of_the_readme_is_current() -> None:
    stale = stale_blocks(REPO / "README.md")
    assert not stale, f"README.md blocks out of date: {', '.join(stale)}; regenerate them with `{REGENERATE}`"


def test_the_status_table_shows_every_error_as_the_mapping_answers_it() -> None:
    from kfloop import errors

    table = status_table()
    for cls in [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, KfloopError)]:
        s = status_of(cls)
        assert f"| `{cls.__name__}` |" in table
        assert f"| {s.http} | `{s.grpc}` | {s.exit_code} |" in table.split(f"| `{cls.__name__}` |")[1].split("\n")[0]
    assert set(STATUSES) <= {c for c in vars(errors).values() if isinstance(c, type)}


def test_write_rewrites_only_the_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    parts = ["# t", ""]
    for name in BLOCKS:
        start, end = markers(name)
        parts += [f"text before {name}", start, "OLD CONTENT", end, ""]
    doc.write_text("\n".join(parts), encoding="utf-8")
    assert stale_blocks(doc) == list(BLOCKS)
    assert write_blocks(doc) is True
    assert stale_blocks(doc) == [] and write_blocks(doc) is False  # idempotent
    text = doc.read_text(encoding="utf-8")
    assert all(f"text before {name}" in text for name in BLOCKS) and "OLD CONTENT" not in text


def test_a_missing_block_is_named(tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="errors:start"):
        write_blocks(doc, ("errors",))
    assert doc.read_text(encoding="utf-8") == "no markers\n"
