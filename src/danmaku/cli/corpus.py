"""``danmaku corpus export|list|show``: versioned pretraining corpora from the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from danmaku.cli.console import console, progress_bar
from danmaku.cli.options import DbOption
from danmaku.store.db import make_engine

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
