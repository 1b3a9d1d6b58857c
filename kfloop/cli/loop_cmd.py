"""``kfloop loop``: the whole loop on the demo, as a timeline (what ``make run`` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, handle_errors, load, require_role


@handle_errors
def loop(
    config: ConfigOption = DEFAULT_CONFIG,
    workdir: Annotated[
        Path | None,
        typer.Option(help="The story's own workspace (emptied first); default: loop/ under the config's storage root."),
    ] = None,
    rows: Annotated[
        int, typer.Option(min=1000, help="Events before the drift (90 days); 21 more days follow.")
    ] = 200_000,
    phase_rows: Annotated[
        int,
        typer.Option(min=100, help="Requests per replayed phase; also each check's window (monitoring.window.rows)."),
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Same seed, same world.")] = 42,
    defects: Annotated[
        str, typer.Option(help="Defects in the source file, as kfloop demo-data --defects; demo: a few of each kind.")
    ] = "demo",
) -> None:
    """Train v1 and serve it, replay normal then drifted traffic, retrain once on drift, promote and serve v2,
    and see the drift clear: a timeline, then what held. Exit 1 when the loop did not close."""
    from kfloop.demo.defects import DefectSpec
    from kfloop.demo.loop import run_loop

    base = load(config)
    require_role(base, "run")
    where = workdir or Path(base.storage.root) / "loop"

    def say(stamp: str, text: str) -> None:
        console.print(f"[dim]{stamp}[/] {escape(text)}", soft_wrap=True)

    outcome = run_loop(
        Path(config),
        where,
        rows=rows,
        phase_rows=phase_rows,
        seed=seed,
        defects=DefectSpec.parse(defects),
        environ=os.environ,
        say=say,
    )
    console.print()
    for claim, ok in outcome.expectations:
        console.print(("[green]✓[/] " if ok else "[red]✗[/] ") + escape(claim))
    verdict = "closed" if outcome.closed else "[red]did not close[/]"
    console.print(f"the loop {verdict} in {outcome.seconds:.0f} s; its workspace: {escape(str(outcome.workdir))}")
    console.print(
        f"explore it: kfloop dashboard -c {escape(str(outcome.config_path))}   "
        f"kfloop models list -c {escape(str(outcome.config_path))}"
    )
    if not outcome.closed:
        raise typer.Exit(1)
