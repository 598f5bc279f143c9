"""The Bilibili spider run inside this process, with the package's own settings.

``danmaku crawl video|uploader|list`` needs neither ``scrapy.cfg`` nor the
current directory: the settings module ``danmaku.crawl.settings`` is loaded
directly, ``-s NAME=VALUE`` overrides it at Scrapy's command-line priority (as
``scrapy crawl -s`` does), and ``JOBDIR`` gives the same pause/resume as Scrapy's
own command. The crawl itself is Scrapy's ``CrawlerProcess``; nothing here
schedules or retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scrapy.settings import Settings

SETTINGS_MODULE = "danmaku.crawl.settings"


def crawl_settings(overrides: Mapping[str, str] | None = None, *, job_dir: Path | None = None,
                   database_url: str | None = None) -> Settings:
    """The package's crawl settings with the user's overrides on top."""
    settings = Settings()
    settings.setmodule(SETTINGS_MODULE, priority="project")
    for name, value in (overrides or {}).items():
        settings.set(name, value, priority="cmdline")
    if job_dir is not None:
        settings.set("JOBDIR", str(job_dir), priority="cmdline")
    if database_url is not None:
        settings.set("DANMAKU_DATABASE_URL", database_url, priority="cmdline")
    return settings


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings (``-s``) as a dict; ``ValueError`` names a malformed one."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"-s wants NAME=VALUE, got {pair!r}")
        overrides[name.strip()] = value
    return overrides


def run_crawl(arguments: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Crawl until done (or Ctrl-C / SIGTERM, which pause a ``JOBDIR`` crawl); the crawl's stats.

    ``arguments`` are the spider's (``bvid``, ``aid``, ``mid``, ``list``,
    ``history_days``), checked by the caller with ``read_arguments``.
    """
    from scrapy.crawler import CrawlerProcess

    from danmaku.crawl.spiders.bilibili_danmaku import BilibiliDanmakuSpider

    process = CrawlerProcess(settings)
    crawler = process.create_crawler(BilibiliDanmakuSpider)
    process.crawl(crawler, **arguments)
    process.start()
    return dict(crawler.stats.get_stats()) if crawler.stats else {}
