"""``danmaku import csv|live``: load the public data sets into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from danmaku.cli.console import console, progress_bar
from danmaku.cli.options import DbOption
from danmaku.importers.parsers import BadLine
from danmaku.importers.run import ImportSummary, StrictModeError
from danmaku.store.db import make_engine

StrictOption = Annotated[
    bool, typer.Option("--strict", help="Stop with an error at the first line or file that cannot be "
                                        "imported (default: record it, go on, list it).")
]
MaxCharsOption = Annotated[
    int | None, typer.Option("--max-chars", min=1, help="Reject danmaku longer than this "
                                                        "[env: DANMAKU_MAX_DANMAKU_CHARS; default 1,000,000]")
]

import_app = typer.Typer(help="Load danmaku data sets into the store (idempotent, resumable).",
                         no_args_is_help=True)


def _summary_table(summary: ImportSummary) -> Table:
    table = Table(title=f"danmaku import {summary.kind}", show_header=True)
    for column in ("files read", "skipped (already in)", "changed (not re-imported)", "failed",
                   "sources new", "rows", "rejected", "seconds", "rows/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary.files_imported), str(summary.files_skipped), str(summary.files_changed),
        str(summary.files_failed), str(summary.sources_created), f"{summary.rows:,}", str(summary.rejected),
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
            console.print("[yellow]... more rejected lines: see `danmaku db stats`[/]")

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
        console.print(f"[yellow]warning:[/] {problem}", markup=False, highlight=False)
    if len(summary.problems) > 20:
        console.print(f"[yellow]... {len(summary.problems) - 20} more problems: see `danmaku db stats`[/]")
    console.print(_summary_table(summary))
    if summary.rejected:
        console.print(f"{summary.rejected} line(s) or file(s) could not be imported; "
                      "they are listed with file and line in the store (`danmaku db stats`); "
                      "a re-run retries unreadable files.")
    return summary


@import_app.command("csv")
def import_csv(
    directory: Annotated[Path, typer.Argument(help="The video CSV tree: {uploader_mid}/{aid}.csv")],
    db: DbOption = None,
    strict: StrictOption = False,
    workers: Annotated[int, typer.Option(help="Parser processes (0 = one per core, at most 4).")] = 0,
    batch_rows: Annotated[int, typer.Option(help="Rows per committed transaction.")] = 100_000,
    max_chars: MaxCharsOption = None,
) -> None:
    """Import the public video-danmaku CSV tree (one source per video).

    Example: danmaku import csv ../shared/data/video_danmaku
    """
    from danmaku.importers.video_csv import find_csv_files, import_video_csv

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="DIRECTORY")
    engine = make_engine(db)
    total = len(find_csv_files(directory)[0])
    if total == 0:
        console.print(f"[yellow]no {{mid}}/{{aid}}.csv files under {directory}[/]")
    _run_import("csv", lambda **kw: import_video_csv(
        engine, directory, strict=strict, workers=workers or None, batch_rows=batch_rows,
        max_chars=max_chars, **kw), total, strict)


@import_app.command("live")
def import_live(
    directory: Annotated[Path, typer.Argument(help="The live-chat tree: {room_id}/{Y-M-D}.txt")],
    db: DbOption = None,
    strict: StrictOption = False,
    gap_minutes: Annotated[float, typer.Option(
        "--gap-minutes", help="A silence longer than this starts a new broadcast.")] = 30.0,
    max_chars: MaxCharsOption = None,
) -> None:
    """Import live-chat files, one source per broadcast (cut by silences).

    Example: danmaku import live ../shared/data/live_danmaku --gap-minutes 30
    """
    from danmaku.importers.live_chat import find_live_files, import_live_chat

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint="DIRECTORY")
    if gap_minutes <= 0:
        raise typer.BadParameter("must be positive", param_hint="--gap-minutes")
    engine = make_engine(db)
    total = len(find_live_files(directory)[0])
    _run_import("live", lambda **kw: import_live_chat(
        engine, directory, strict=strict, gap_minutes=gap_minutes, max_chars=max_chars, **kw),
        total, strict)
