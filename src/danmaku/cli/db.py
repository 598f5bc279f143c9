"""``danmaku db upgrade|stats``: the store's migrations and figures."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from danmaku.cli.console import console, format_ms
from danmaku.cli.options import DbOption
from danmaku.store.db import make_engine, redact, resolve_url, upgrade_to_head
from danmaku.store.stats import store_stats

db_app = typer.Typer(help="The store: migrations and figures.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply alembic migrations up to the newest revision.

    Example: DANMAKU_DATABASE_URL=postgresql://danmaku@localhost/danmaku danmaku db upgrade
    """
    engine = make_engine(db, upgrade=False)
    applied = upgrade_to_head(engine)
    console.print(f"{redact(resolve_url(db))}: {'upgraded' if applied else 'already'} at head")


@db_app.command("stats")
def db_stats(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    top: Annotated[int, typer.Option(help="How many uploaders/rooms to list.")] = 20,
) -> None:
    """Sources and danmaku in total, per kind and per uploader/room; rejects; runs.

    Example: danmaku db stats --json | jq .danmaku
    """
    stats = store_stats(make_engine(db), top=top)
    if as_json:
        typer.echo(json.dumps(stats, ensure_ascii=False, indent=2))
        return
    out = console.__class__()
    table = Table(title=f"store {redact(resolve_url(db))}")
    table.add_column("kind")
    table.add_column("sources", justify="right")
    table.add_column("danmaku", justify="right")
    for kind, figures in stats["by_kind"].items():
        table.add_row(kind, f"{figures['sources']:,}", f"{figures['danmaku']:,}")
    table.add_row("[bold]total", f"{stats['sources']:,}", f"{stats['danmaku']:,}")
    out.print(table)
    out.print(f"time range: {format_ms(stats['first_sent_at_ms'])} .. {format_ms(stats['last_sent_at_ms'])}")
    owners = Table(title=f"top {top} uploaders / rooms")
    for column in ("kind", "mid / room", "sources", "danmaku"):
        owners.add_column(column, justify="right" if column != "kind" else "left")
    for row in stats["top_owners"]:
        owners.add_row(row["kind"], str(row["id"]), f"{row['sources']:,}", f"{row['danmaku']:,}")
    out.print(owners)
    out.print(f"rejected lines: {stats['rejected']:,}")
    for reason, n in stats["rejected_by_reason"].items():
        out.print(f"  {n:>8,}  {reason}")
