"""Blocks of README.md generated from the code, so they cannot drift from it.

A block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. ``make docs``
(``python -m kfloop.docs README.md``) rewrites every block; a test fails when one differs from the code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

#: The one command that regenerates every block.
REGENERATE = "make docs"


def _config_reference() -> str:
    from kfloop.config.reference import render_reference

    return render_reference()


def _error_statuses() -> str:
    from kfloop.errors import status_table

    return status_table()


def _chart_values() -> str:
    from kfloop.kube.schema import values_reference

    note = "<!-- generated from kfloop/kube/schema.py (helm/kfloop/values.schema.json) by `make docs` -->"
    return f"{note}\n{values_reference()}\n"


#: Block name → what renders it.
BLOCKS: dict[str, Callable[[], str]] = {
    "config-reference": _config_reference,
    "errors": _error_statuses,
    "chart-values": _chart_values,
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _span(text: str, name: str) -> tuple[int, int]:
    start_mark, end_mark = markers(name)
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise ValueError(f"no {name} block: expected {start_mark} … {end_mark}")
    return start + len(start_mark), end


def extract_block(text: str, name: str) -> str:
    """What sits between the block's markers now (without them)."""
    start, end = _span(text, name)
    return text[start:end].strip("\n") + "\n"


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the named block replaced by ``block``."""
    start, end = _span(text, name)
    return f"{text[:start]}\n{block.strip(chr(10))}\n{text[end:]}"


def stale_blocks(path: Path, names: tuple[str, ...] = tuple(BLOCKS)) -> list[str]:
    """The named blocks of ``path`` that differ from what the code renders now."""
    text = path.read_text(encoding="utf-8")
    return [name for name in names if extract_block(text, name) != BLOCKS[name]()]


def write_blocks(path: Path, names: tuple[str, ...] = tuple(BLOCKS)) -> bool:
    """Regenerate the named blocks in ``path``; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    new = text
    for name in names:
        new = replace_block(new, name, BLOCKS[name]())
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")  # in place: keeps the file's mode (a temp file would be 0600)
    return True


def main(argv: list[str]) -> int:
    """``python -m kfloop.docs FILE…``: regenerate every block of each file."""
    for arg in argv or ["README.md"]:
        changed = write_blocks(Path(arg))
        print(f"{arg}: {'updated' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
