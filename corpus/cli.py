"""``dd import ...`` and ``dd db ...``: fill the store and look into it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from corpus.db import make_engine, redact, resolve_url, upgrade_to_head
from corpus.importers.runs import ImportSummary, StrictModeError
from corpus.parsers import BadLine
from corpus.stats import store_stats
from dd.console import console, progress_bar

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL or SQLite file path [env: DD_DATABASE_URL; default ./dd.sqlite]"),
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Stop with an error at the first line that does not parse.")
]

import_app = typer.Typer(help="Load danmaku data sets into the store (idempotent, resumable).",
                         no_args_is_help=True)
db_app = typer.Typer(help="The store: migrations and figures.", no_args_is_help=True)


def _summary_table(summary: ImportSummary) -> Table:
    table = Table(title=f"dd import {summary.kind}", show_header=True)
    for column in ("files read", "skipped (already in)", "changed (not re-imported)", "sources new",
                   "rows", "rejected", "seconds", "rows/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary.files_imported), str(summary.files_skipped), str(summary.files_changed),
        str(summary.sources_created), f"{summary.rows:,}", str(summary.rejected),
        f"{summary.seconds:.1f}", f"{summary.rows_per_s:,.0f}",
    )
    return table


def _run_import(kind: str, fn, files_total: int, strict: bool) -> ImportSummary:
    shown_bad = 0

    def on_bad(name: str, bad: BadLine) -> None:
        nonlocal shown_bad
        shown_bad += 1
        if shown_bad <= 20:
            console.print(f"[yellow]rejected[/] {name}:{bad.line}: {bad.reason}: "
                          f"{bad.raw[:60].decode('utf-8', 'replace')!r}")
        elif shown_bad == 21:
            console.print("[yellow]... more rejected lines: see `dd db stats`[/]")

    with progress_bar() as progress:
        task = progress.add_task(f"import {kind}", total=files_total, detail="")
        rows = 0

        def on_file(name: str, n: int) -> None:
            nonlocal rows
            rows += n
            progress.update(task, advance=1, detail=f"{rows:,} rows")

        try:
            summary = fn(on_file=on_file, on_bad=on_bad)
        except StrictModeError as error:
            console.print(f"[red]error:[/] {error} (--strict; nothing of that file was stored)")
            raise typer.Exit(1) from error
    for problem in summary.problems[:20]:
        console.print(f"[yellow]warning:[/] {problem}")
    console.print(_summary_table(summary))
    if summary.rejected:
        console.print(f"{summary.rejected} line(s) could not be parsed; "
                      "they are listed with file and line in the store (`dd db stats`).")
    return summary


@import_app.command("csv")
def import_csv(
    directory: Annotated[Path, typer.Argument(help="The video CSV tree: {uploader_mid}/{aid}.csv")],
    db: DbOption = None,
    strict: StrictOption = False,
    workers: Annotated[int, typer.Option(help="Parser processes (0 = one per core, at most 4).")] = 0,
    batch_rows: Annotated[int, typer.Option(help="Rows per committed transaction.")] = 100_000,
) -> None:
    """Import the public video-danmaku CSV tree (one source per video).

    Example: dd import csv ../shared/data/video_danmaku
    """
    from corpus.importers.video_csv import find_csv_files, import_video_csv

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="DIRECTORY")
    engine = make_engine(db)
    total = sum(1 for _ in find_csv_files(directory))
    if total == 0:
        console.print(f"[yellow]no {{mid}}/{{aid}}.csv files under {directory}[/]")
    _run_import("csv", lambda **kw: import_video_csv(
        engine, directory, strict=strict, workers=workers or None, batch_rows=batch_rows, **kw),
        total, strict)


@import_app.command("live")
def import_live(
    directory: Annotated[Path, typer.Argument(help="The live-chat tree: {room_id}/{Y-M-D}.txt")],
    db: DbOption = None,
    strict: StrictOption = False,
    gap_minutes: Annotated[float, typer.Option(
        "--gap-minutes", help="A silence longer than this starts a new broadcast.")] = 30.0,
) -> None:
    """Import live-chat files, one source per broadcast (cut by silences).

    Example: dd import live ../shared/data/live_danmaku --gap-minutes 30
    """
    from corpus.importers.live_chat import find_live_files, import_live_chat

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="DIRECTORY")
    if gap_minutes <= 0:
        raise typer.BadParameter("must be positive", param_hint="--gap-minutes")
    engine = make_engine(db)
    total = sum(1 for _ in find_live_files(directory))
    _run_import("live", lambda **kw: import_live_chat(
        engine, directory, strict=strict, gap_minutes=gap_minutes, **kw), total, strict)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply alembic migrations up to the newest revision.

    Example: DD_DATABASE_URL=postgresql://dd@localhost/dd dd db upgrade
    """
    engine = make_engine(db, upgrade=False)
    applied = upgrade_to_head(engine)
    console.print(f"{redact(resolve_url(db))}: {'upgraded' if applied else 'already'} at head")


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@db_app.command("stats")
def db_stats(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    top: Annotated[int, typer.Option(help="How many uploaders/rooms to list.")] = 20,
) -> None:
    """Sources and danmaku in total, per kind and per uploader/room; rejects; runs.

    Example: dd db stats --json | jq .danmaku
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
    out.print(f"time range: {_fmt_ms(stats['first_sent_at_ms'])} .. {_fmt_ms(stats['last_sent_at_ms'])}")
    owners = Table(title=f"top {top} uploaders / rooms")
    for column in ("kind", "mid / room", "sources", "danmaku"):
        owners.add_column(column, justify="right" if column != "kind" else "left")
    for row in stats["top_owners"]:
        owners.add_row(row["kind"], str(row["id"]), f"{row['sources']:,}", f"{row['danmaku']:,}")
    out.print(owners)
    out.print(f"rejected lines: {stats['rejected']:,}")
    for reason, n in stats["rejected_by_reason"].items():
        out.print(f"  {n:>8,}  {reason}")
