"""``dd crawl ...``: look at the Bilibili crawler's work (the crawl itself is ``scrapy crawl``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from corpus.db import make_engine, redact, resolve_url
from dd.console import console, format_ms

crawl_app = typer.Typer(
    help="The Bilibili danmaku crawler. Crawl with `scrapy crawl bilibili_danmaku -a ...` "
         "from the repository root; these commands read what it stored.",
    no_args_is_help=True,
)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL or SQLite file path [env: DD_DATABASE_URL; "
                              "default ./dd.sqlite]"),
]


ROWS = (("videos", "videos"), ("pages", "pages"), ("  new sources", "pages_new"),
        ("  merged into existing", "pages_merged"), ("segments", "segments"),
        ("XML lists", "xml_lists"), ("history days", "history_days"),
        ("danmaku new", "danmaku_new"), ("danmaku filled (CSV rows)", "danmaku_filled"),
        ("danmaku known", "danmaku_known"), ("gone", "gone"), ("danmaku closed", "closed"),
        ("XML fallbacks", "fallbacks"), ("failed", "failed"))


@crawl_app.command("status")
def status(
    db: DbOption = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="How many recent crawls to show.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Videos, pages and segments done, danmaku stored and problems, per crawl run.

    Example: dd crawl status --runs 5
    """
    from crawler.status import crawl_status

    report = crawl_status(make_engine(db), last=runs)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    out = console.__class__()
    if not report["runs"]:
        out.print(f"no crawl runs in {redact(resolve_url(db))} yet: "
                  "scrapy crawl bilibili_danmaku -a bvid=BV...")
        return
    table = Table(title=f"crawl runs in {redact(resolve_url(db))} "
                        f"(latest {len(report['runs'])} of {report['total_runs']})")
    table.add_column("")
    for run in report["runs"]:
        table.add_column(f"run {run['id']}", justify="right")
    table.add_column("all runs", justify="right")
    runs_and_all = [*report["runs"], report["totals"]]
    table.add_row("status", *(r["status"] for r in report["runs"]), "")
    started = (format_ms(r["started_at_ms"], seconds=False) for r in report["runs"])
    table.add_row("started (UTC)", *started, "")
    for label, name in ROWS:
        table.add_row(label, *(f"{r[name]:,}" for r in runs_and_all))
    out.print(table)
    store = report["store"]
    out.print(f"store: {store['crawled_pages']:,} crawled pages ({store['gone_pages']:,} gone), "
              f"{store['danmaku_with_dmid']:,} danmaku with a dmid")
    latest = report["runs"][0]
    if latest["problems"]:
        out.print(f"problems of run {latest['id']} (first {len(latest['problems'])}):")
        for problem in latest["problems"]:
            out.print(f"  {problem}", markup=False, highlight=False)
