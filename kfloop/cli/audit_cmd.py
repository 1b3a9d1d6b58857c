"""``kfloop audit verify|show``: check the hash-chained audit trail, and read it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kfloop.cli._common import DEFAULT_CONFIG, ConfigOption, console, err_console, handle_errors, load, workspace

app = typer.Typer(help="The audit trail of every state change: verify its hash chain, read it.", no_args_is_help=True)

#: Exit code of ``verify`` when the chain is broken (1 is any other error: storage, config).
BROKEN = 4
_DETAILS_CHARS = 100


@app.command("verify")
@handle_errors
def verify(
    config: ConfigOption = DEFAULT_CONFIG,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="HASH",
            help="The head hash an earlier verify printed (kept outside the workspace): also catches a log rewritten "
            "from some record on, hashes and all.",
        ),
    ] = None,
) -> None:
    """Walk the chain from record 1: exit 0 and print how many records were checked and the head hash when it is
    intact; else exit 4 naming the first bad record and what is wrong with it (changed, removed, reordered, cut off)."""
    from kfloop.audit import verify as verify_chain

    verdict = verify_chain(workspace(load(config)), expect_head=expect_head)
    if verdict.ok:
        console.print(f"audit trail intact: {verdict.records} record(s) checked; head {verdict.head}", highlight=False)
        return
    where = f"record {verdict.first_bad}" if verdict.first_bad is not None else "the head"
    err_console.print(f"[bold red]audit trail broken at {where}:[/] {escape(verdict.problem or '')}", highlight=False)
    err_console.print(
        f"{verdict.records} record(s) before it check out; the last good one's hash is {verdict.head}", highlight=False
    )
    raise typer.Exit(BROKEN)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``/``24h``/``15m``/``90s`` before now, or an ISO date or time (a naive one is UTC)."""
    from kfloop.config.contract import parse_duration

    now = now or datetime.now(UTC)
    try:
        return now - parse_duration(text)
    except OverflowError:
        raise typer.BadParameter(f"{text!r} reaches back before the year 1", param_hint="--since") from None
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (7d, 24h, 15m) nor an ISO date or time", param_hint="--since"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return text if len(text) <= _DETAILS_CHARS else text[: _DETAILS_CHARS - 1] + "…"


@app.command("show")
@handle_errors
def show(
    config: ConfigOption = DEFAULT_CONFIG,
    since: Annotated[
        str | None, typer.Option(help="Only records from this long ago (7d, 24h) or from an ISO date or time.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only records about this model (subject.model).")] = None,
    action: Annotated[
        list[str] | None,
        typer.Option(
            "--action", help="Only this action, e.g. model.promote, or area, e.g. model (matches model.*); repeatable."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line instead of the table.")] = False,
) -> None:
    """The records, oldest first: when, who (user or ServiceAccount), what action on which subject, and details.
    Reading does not verify the chain: `kfloop audit verify` does."""
    from kfloop.audit import read

    start = parse_since(since) if since else None
    records = read(workspace(load(config)), since=start, model=model, actions=action)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record, sort_keys=True, default=str))
        return
    table = Table(title=f"audit trail: {len(records)} record(s)")
    for col in ("#", "at (UTC)", "actor", "action", "subject", "details"):
        table.add_column(col, overflow="fold")
    for r in records:
        subject = r.get("subject") or {}
        table.add_row(
            str(r.get("seq")),
            str(r.get("at", ""))[:19],
            escape(str(r.get("actor"))),
            escape(str(r.get("action"))),
            escape(" ".join(f"{k}={v}" for k, v in subject.items()) if isinstance(subject, dict) else str(subject)),
            escape(_short(r.get("details") or {})),
        )
    console.print(table)
