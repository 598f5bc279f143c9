"""scrapy-redis mode: several crawler processes (machines) share one request queue.

Enabled by ``DANMAKU_REDIS_URL`` (``-s DANMAKU_REDIS_URL=redis://host:6379/0`` or the
environment variable of that name). Every worker then uses scrapy-redis's
scheduler and dupefilter, keyed ``DANMAKU_REDIS_KEY`` (default ``danmaku:bilibili_danmaku``)
``:requests`` / ``:dupefilter``, and writes items into the store named by
``DANMAKU_DATABASE_URL`` -- one PostgreSQL for all of them. The queue and the seen
set persist (``SCHEDULER_PERSIST``): stopping and restarting workers resumes;
to crawl the same videos again from scratch, delete the two keys
(``redis-cli del danmaku:bilibili_danmaku:requests danmaku:bilibili_danmaku:dupefilter``).

A worker whose queue runs dry waits ``DANMAKU_REDIS_IDLE_SECONDS`` (default 60) for
requests that other workers may still add before it closes.
"""

from __future__ import annotations

import os

from scrapy.settings import BaseSettings

ENV_VAR = "DANMAKU_REDIS_URL"


def redis_url(settings: BaseSettings) -> str | None:
    """The Redis URL of the shared queue, or None for a single-process crawl."""
    return settings.get("DANMAKU_REDIS_URL") or os.environ.get(ENV_VAR) or None


def apply_redis_mode(settings: BaseSettings) -> bool:
    """Switch the scheduler and dupefilter to scrapy-redis when a Redis URL is given.

    Uses the "spider" priority: above ``crawler/settings.py``, below ``-s`` on the
    command line, so any of these can still be overridden there.
    """
    url = redis_url(settings)
    if not url:
        return False
    prefix = settings.get("DANMAKU_REDIS_KEY") or os.environ.get("DANMAKU_REDIS_KEY") or "danmaku:%(spider)s"
    for name, value in {
        "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        "SCHEDULER_PERSIST": True,
        "SCHEDULER_QUEUE_KEY": f"{prefix}:requests",
        "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:dupefilter",
        "REDIS_URL": url,
    }.items():
        settings.set(name, value, priority="spider")
    return True
