"""The config reference in README.md is generated from the config models and cannot go stale."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner

from kfloop.cli import app
from kfloop.config import Config
from kfloop.config.reference import REGENERATE, missing_descriptions, render_reference
from kfloop.docs import extract_block, markers, replace_block
from tests.conftest import REPO

README = REPO / "README.md"
runner = CliRunner()


START, END = markers("config-reference")


def test_readme_block_is_the_generated_reference() -> None:
    block = extract_block(README.read_text(encoding="utf-8"), "config-reference")
    assert block == render_reference(), (
        f"README.md's config reference (between {START} and {END}) differs from the config models: "
        f"regenerate it with `make docs` (or {REGENERATE})"
    )


def test_every_key_has_a_description() -> None:
    missing = missing_descriptions()
    assert not missing, "config keys without a description= (the README reference needs one): " + ", ".join(missing)


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                _models(tp, seen)
            stack.extend(typing.get_args(tp))


def test_every_section_and_key_is_rendered() -> None:
    text = render_reference()
    seen: set[type[BaseModel]] = set()
    _models(Config, seen)
    assert len(seen) > 20  # the walk really descended (storage variants, contract, features, serving …)
    for model in seen:
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} missing from the reference"
    for heading in ("### `storage` with `type: s3`", "### `features.views[].aggregates[]`", "### `monitoring`"):
        assert heading in text


def test_write_replaces_only_the_block_and_check_flags_a_stale_one(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(f"# title\n\nbefore\n\n{START}\nold table\n{END}\n\nafter\n", encoding="utf-8")
    stale = runner.invoke(app, ["config", "reference", "--check", str(doc)])
    assert stale.exit_code == 1
    assert REGENERATE in stale.output

    wrote = runner.invoke(app, ["config", "reference", "--write", str(doc)])
    assert wrote.exit_code == 0, wrote.output
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nbefore\n\n" + START) and text.endswith(END + "\n\nafter\n")
    assert extract_block(text, "config-reference") == render_reference()
    assert replace_block(text, "config-reference", render_reference()) == text  # idempotent
    assert runner.invoke(app, ["config", "reference", "--check", str(doc)]).exit_code == 0


def test_a_file_without_markers_is_a_clear_error(tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("no markers here\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "reference", "--write", str(doc)])
    assert result.exit_code == 2
    assert "config-reference:start" in result.output
    assert doc.read_text(encoding="utf-8") == "no markers here\n"


def test_print_to_stdout() -> None:
    result = runner.invoke(app, ["config", "reference"])
    assert result.exit_code == 0
    assert result.output == render_reference()
