"""``danmaku import ...`` and ``danmaku db ...``: fill the store and look into it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from danmaku.cli.console import console, format_ms, progress_bar
from danmaku.importers.parsers import BadLine
from danmaku.importers.run import ImportSummary, StrictModeError
from danmaku.store.db import make_engine, redact, resolve_url, upgrade_to_head
from danmaku.store.stats import store_stats

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL or SQLite file path "
                         "[env: DANMAKU_DATABASE_URL; default ./danmaku.sqlite]"),
]
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
db_app = typer.Typer(help="The store: migrations and figures.", no_args_is_help=True)


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


# --------------------------------------------------------------------------- danmaku corpus

corpus_app = typer.Typer(
    help="Versioned pretraining corpora (danmaku_text_pure.txt): export, list, show.",
    no_args_is_help=True,
)
RootOption = Annotated[Path, typer.Option(
    "--root", envvar="DANMAKU_CORPORA", help="Where corpora live.")]


def _parse_time(value: str | None, option: str) -> int | None:
    """ISO date or date-time -> UTC unix ms; a value without an offset is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter("expected an ISO date or date-time, e.g. 2019-06-01 or "
                                 "2019-06-01T20:00+08:00", param_hint=option) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _parse_ids(value: str | None, option: str) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        ids = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError as error:
        raise typer.BadParameter("expected comma-separated integers, e.g. 21919321,22625025",
                                 param_hint=option) from error
    return _checked_ids(ids, option)


def _checked_ids(ids: list[int] | tuple[int, ...] | None, option: str) -> tuple[int, ...]:
    """Sorted unique ids; one that no store column can hold is a usage error, not an overflow."""
    ids = tuple(sorted(set(ids or ())))
    out_of_range = [i for i in ids if not 0 <= i < 2**63]
    if out_of_range:
        raise typer.BadParameter(f"{out_of_range[0]} is not an id (ids are 0 .. 2^63-1)", param_hint=option)
    return ids


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _export_summary(result) -> Table:
    m = result.manifest
    counts = m["counts"]
    table = Table(title=f"corpus {m['version']}" + (f" ({m['name']})" if m.get("name") else ""),
                  show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("path", str(result.path))
    for file_name, info in m["files"].items():
        table.add_row(file_name, f"{info['documents']:,} documents, {info['danmaku']:,} danmaku, "
                                 f"{info['bytes'] / 1e6:,.1f} MB")
    table.add_row("sources selected", f"{counts['sources_selected']:,} "
                  + ", ".join(f"{k}: {v:,}" for k, v in counts["sources_by_kind"].items()))
    table.add_row("danmaku read", f"{counts['danmaku_read']:,}")
    read = counts["danmaku_read"]
    table.add_row("kept", f"{counts['danmaku_kept']:,} ({_pct(counts['danmaku_kept'], read)})")
    for reason, n in counts["dropped_by_reason"].items():
        table.add_row(f"dropped: {reason}", f"{n:,} ({_pct(n, counts['danmaku_read'])})")
    table.add_row("characters", f"{counts['characters']:,}")
    seconds = result.seconds
    table.add_row("seconds", f"{seconds:.1f} ({counts['danmaku_read'] / seconds:,.0f} danmaku/s)"
                  if seconds > 0 else "-")
    return table


@corpus_app.command("export")
def corpus_export(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output directory (default: ROOT/<version>).")] = None,
    vocab: Annotated[Path, typer.Option(
        "--vocab", envvar="DANMAKU_VOCAB", help="Google BERT vocab.txt of the filter.")]
        = Path("vocab.txt"),
    db: DbOption = None,
    root: RootOption = Path("corpora"),
    name: Annotated[str | None, typer.Option(help="A human name, kept in the manifest.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only 'video' pages or 'live' broadcasts.")] = None,
    uploader: Annotated[list[int] | None, typer.Option(
        "--uploader", help="Only videos of this uploader mid (repeatable).")] = None,
    room: Annotated[list[int] | None, typer.Option(
        "--room", help="Only broadcasts of this live room (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="Only danmaku sent at/after this ISO time (UTC "
                                                   "unless an offset is given).")] = None,
    until: Annotated[str | None, typer.Option(help="Only danmaku sent before this ISO time.")] = None,
    eval_fraction: Annotated[float, typer.Option(
        help="Share of sources (by hash of the source key: stable as the store grows) written to "
             "the eval file.")] = 0.0,
    eval_rooms: Annotated[str | None, typer.Option(
        help="Comma-separated live rooms whose broadcasts all go to the eval file.")] = None,
    min_danmaku_per_doc: Annotated[int, typer.Option(
        help="Leave out documents with fewer kept danmaku.")] = 1,
    collapse_repeats: Annotated[bool, typer.Option(
        help="Leave out a danmaku equal to the one kept just before it in its document.")] = False,
    max_chars: Annotated[int | None, typer.Option(help="Leave out danmaku longer than this.")] = None,
    workers: Annotated[int, typer.Option(
        help="Processes, each exporting a range of sources (same bytes for any number).")] = 1,
    force: Annotated[bool, typer.Option(help="Replace another corpus at --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write danmaku_text_pure.txt (+ .eval.txt) and manifest.json from the store.

    Defaults reproduce the study: every source with a kept danmaku is a document,
    danmaku in time order, kept iff Google's tokenizer gives no [UNK].

    Example: danmaku corpus export --vocab chinese_L-12_H-768_A-12/vocab.txt --eval-rooms 21919321
    --name study
    """
    from danmaku.corpus.export import KIND_OPTIONS, ExportError, ExportOptions, Selection, export_corpus
    from danmaku.corpus.export_reader import count_sources

    if kind is not None and kind not in KIND_OPTIONS:
        raise typer.BadParameter("must be 'video' or 'live'", param_hint="--kind")
    try:
        selection = Selection(
            kind=KIND_OPTIONS[kind] if kind else None, uploaders=_checked_ids(uploader, "--uploader"),
            rooms=_checked_ids(room, "--room"), since_ms=_parse_time(since, "--since"),
            until_ms=_parse_time(until, "--until"))
        options = ExportOptions(
            eval_fraction=eval_fraction, eval_rooms=_parse_ids(eval_rooms, "--eval-rooms"),
            min_danmaku_per_doc=min_danmaku_per_doc, collapse_repeats=collapse_repeats,
            max_chars=max_chars)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if workers < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--workers")
    if not vocab.is_file():
        console.print(f"[red]error:[/] vocabulary not found: {vocab} (give --vocab PATH to Google's "
                      "Chinese BERT vocab.txt, or set DANMAKU_VOCAB)")
        raise typer.Exit(1)
    engine = make_engine(db)
    total = count_sources(engine, selection)
    with progress_bar() as progress:
        task = progress.add_task("export", total=total or None, detail="")

        def on_progress(sources: int, read: int, kept: int) -> None:
            progress.update(task, completed=sources, detail=f"{kept:,}/{read:,} danmaku kept")

        try:
            result = export_corpus(engine, vocab, out=out, root=root, name=name, selection=selection,
                                   options=options, force=force, workers=workers,
                                   on_progress=on_progress)
        except ExportError as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(1) from error
    if as_json:
        typer.echo(json.dumps(result.manifest, ensure_ascii=False, indent=2))
    console.print(_export_summary(result))
    if not result.created:
        console.print(f"identical corpus already at {result.path}: left as it was")
    console.print(f"cite as: danmaku corpus {result.manifest['version']} "
                  f"(sha256 of {', '.join(result.manifest['files'])} in {result.path / 'manifest.json'})")


@corpus_app.command("list")
def corpus_list(
    root: RootOption = Path("corpora"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifests as a JSON list.")] = False,
) -> None:
    """Corpora under ROOT, oldest first.

    Example: danmaku corpus list --root corpora
    """
    from danmaku.corpus.manifest import list_corpora

    corpora = list_corpora(root)
    if as_json:
        typer.echo(json.dumps([dict(m, path=str(p)) for p, m in corpora], ensure_ascii=False, indent=2))
        return
    if not corpora:
        console.print(f"no corpus under {root} (make one with `danmaku corpus export`)")
        return
    table = Table(title=f"corpora in {root}")
    table.add_column("version", no_wrap=True, min_width=12)
    table.add_column("name")
    table.add_column("created (UTC)", no_wrap=True)
    for column in ("documents", "danmaku", "dropped", "MB"):
        table.add_column(column, justify="right")
    for _, m in corpora:
        c = m["counts"]
        table.add_row(m["version"], m.get("name") or "", m["provenance"]["created_at"][:16].replace("T", " "),
                      f"{c['documents']:,}", f"{c['danmaku_kept']:,}", f"{c['danmaku_dropped']:,}",
                      f"{sum(f['bytes'] for f in m['files'].values()) / 1e6:,.1f}")
    Console().print(table)


@corpus_app.command("show")
def corpus_show(
    ref: Annotated[str, typer.Argument(help="Version (or a 4+ digit prefix), --name, or directory.")],
    root: RootOption = Path("corpora"),
    verify: Annotated[bool, typer.Option(help="Re-hash the files and compare with the manifest.")]
        = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Everything the manifest of one corpus says: files, counts, settings, vocab.

    Example: danmaku corpus show 9ac5104656f5 --verify
    """
    from danmaku.corpus.manifest import find_corpus
    from danmaku.corpus.manifest import verify as verify_files

    try:
        path, m = find_corpus(root, ref)
    except LookupError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    problems = verify_files(path, m) if verify else []
    if as_json:
        typer.echo(json.dumps(dict(m, path=str(path)), ensure_ascii=False, indent=2))
    else:
        out = Console()
        c = m["counts"]
        out.print(f"[bold]corpus {m['version']}[/]" + (f" ({m['name']})" if m.get("name") else "")
                  + f"  {path}")
        out.print(f"created {m['provenance']['created_at']} by danmaku {m['provenance']['danmaku_version']} "
                  f"from {m['provenance']['store']}")
        out.print("[bold]files[/]")
        for file_name, info in m["files"].items():
            # Whole hashes, never wrapped: they are what a paper cites.
            out.print(f"  {file_name}  sha256 {info['sha256']}", soft_wrap=True)
            out.print(f"    {info['bytes']:,} bytes, {info['documents']:,} documents, "
                      f"{info['danmaku']:,} danmaku, {info['characters']:,} characters")
        figures = Table(title="counts", show_header=False)
        figures.add_column("what")
        figures.add_column("value", justify="right")
        figures.add_row("sources selected", f"{c['sources_selected']:,}")
        for k, v in c["sources_by_kind"].items():
            figures.add_row(f"  {k}", f"{v:,} sources, {c['documents_by_kind'].get(k, 0):,} documents")
        figures.add_row("sources without a document", f"{c['sources_without_document']:,}")
        figures.add_row("danmaku read", f"{c['danmaku_read']:,}")
        kept = c["danmaku_kept"]
        figures.add_row("danmaku kept", f"{kept:,} ({_pct(kept, c['danmaku_read'])})")
        for reason, n in c["dropped_by_reason"].items():
            figures.add_row(f"  dropped: {reason}", f"{n:,}")
        figures.add_row("characters", f"{c['characters']:,}")
        out.print(figures)
        vocab_info = m["vocab"]
        out.print(f"vocab sha256 {vocab_info['sha256']} ({vocab_info['tokens']:,} tokens"
                  + (", Google Chinese BERT" if vocab_info["google_chinese_bert"] else "") + ")",
                  soft_wrap=True)
        out.print("selection: " + json.dumps(m["selection"], ensure_ascii=False))
        out.print("settings: " + json.dumps(m["settings"], ensure_ascii=False))
        if verify:
            out.print("[green]files intact[/]" if not problems else "[red]" + "; ".join(problems) + "[/]")
    if problems:
        raise typer.Exit(1)
