"""``danmaku crawl ...``: crawl Bilibili video danmaku into the store, and look at the crawls.

``video``, ``uploader`` and ``list`` run Scrapy in this process with the
package's settings (``danmaku.crawl.process``); ``scrapy crawl bilibili_danmaku``
from the repository root does the same crawl. ``status`` reads the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from danmaku.cli.console import console, format_ms
from danmaku.cli.options import DbOption
from danmaku.store.db import make_engine, redact, resolve_url

crawl_app = typer.Typer(
    help="The Bilibili danmaku crawler: video danmaku into the store (polite by default: one "
         "request at a time, about one per second, no login). Respect Bilibili's terms (README).",
    no_args_is_help=True,
)


SettingOption = Annotated[
    list[str] | None,
    typer.Option("-s", "--set", help="Scrapy setting NAME=VALUE (repeatable), as `scrapy crawl -s`."),
]
JobDirOption = Annotated[
    Path | None,
    typer.Option("--job-dir", help="Scrapy JOBDIR: Ctrl-C pauses, the same command resumes."),
]
HistoryOption = Annotated[
    int, typer.Option("--history-days", min=0,
                      help="Also read the danmaku history of the first N days "
                           "(needs DANMAKU_BILIBILI_SESSDATA).")]


def _crawl(arguments: dict[str, str], db: str | None, settings: list[str] | None,
           job_dir: Path | None) -> None:
    from danmaku.crawl.process import crawl_settings, parse_overrides, run_crawl
    from danmaku.crawl.spiders.bilibili_danmaku import read_arguments
    from danmaku.crawl.targets import TargetError

    try:
        read_arguments(**arguments)
        overrides = parse_overrides(settings or [])
    except (TargetError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None
    stats = run_crawl(arguments, crawl_settings(overrides, job_dir=job_dir, database_url=db))
    reason = stats.get("finish_reason", "unknown")
    new = stats.get("danmaku/danmaku_new", 0)
    console.print(f"crawl {reason}: {stats.get('danmaku/pages', 0):,} pages, {new:,} new danmaku "
                  f"into {redact(resolve_url(db))}; see `danmaku crawl status`")
    if reason not in ("finished", "shutdown"):
        raise typer.Exit(1)


@crawl_app.command("video")
def video(
    ids: Annotated[list[str], typer.Argument(help="Videos: BV ids or av numbers (av170001 or 170001).")],
    db: DbOption = None, history_days: HistoryOption = 0, settings: SettingOption = None,
    job_dir: JobDirOption = None,
) -> None:
    """Every danmaku of these videos, page by page.

    Example: danmaku crawl video BV1xx411c7mD av170001 --job-dir crawls/one
    """
    bvids = [i for i in ids if i[:2].upper() == "BV"]
    aids = [i for i in ids if i[:2].upper() != "BV"]
    arguments = {"history_days": str(history_days)}
    if bvids:
        arguments["bvid"] = ",".join(bvids)
    if aids:
        arguments["aid"] = ",".join(aids)
    _crawl(arguments, db, settings, job_dir)


@crawl_app.command("uploader")
def uploader(
    mids: Annotated[list[str], typer.Argument(help="Uploaders' ids (mid), e.g. 349991143.")],
    db: DbOption = None, history_days: HistoryOption = 0, settings: SettingOption = None,
    job_dir: JobDirOption = None,
) -> None:
    """Every video of these uploaders (their WBI-signed video listing), then their danmaku.

    Example: danmaku crawl uploader 349991143 --job-dir crawls/aqua -s DOWNLOAD_DELAY=2
    """
    _crawl({"mid": ",".join(mids), "history_days": str(history_days)}, db, settings, job_dir)


@crawl_app.command("list")
def from_list(
    path: Annotated[Path, typer.Argument(
        help="A file of av/BV ids, one per line (the study's av_data_list.txt).")],
    db: DbOption = None, history_days: HistoryOption = 0, settings: SettingOption = None,
    job_dir: JobDirOption = None,
) -> None:
    """Every video named in a list file, in its order.

    Example: danmaku crawl list ../shared/data/av_data_list.txt --job-dir crawls/study
    """
    _crawl({"list": str(path), "history_days": str(history_days)}, db, settings, job_dir)


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

    Example: danmaku crawl status --runs 5
    """
    from danmaku.crawl.status import crawl_status

    report = crawl_status(make_engine(db), last=runs)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    out = console.__class__()
    if not report["runs"]:
        out.print(f"no crawl runs in {redact(resolve_url(db))} yet: "
                  "danmaku crawl video BV...")
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
