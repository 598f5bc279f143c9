"""Send every request to one origin: ``BILIBILI_BASE_URL`` (env ``DANMAKU_BILIBILI_BASE_URL``).

With it set, ``https://api.bilibili.com/x/v2/dm/web/seg.so?...`` goes to
``{BILIBILI_BASE_URL}/x/v2/dm/web/seg.so?...`` -- same path and query, whatever
the Bilibili host -- so one local server (``tests/mockbili``) or a forwarding
proxy can stand in for all of Bilibili. Unset (the default), the middleware
disables itself.

A rewritten request goes back to the scheduler (Scrapy's way for a middleware
to change a URL) with ``dont_filter``; the dupefilter and ``JOBDIR`` keep
seeing the original Bilibili URL. The rewrite itself is ``danmaku.bilibili.base_url``,
shared with the live recorder.
"""

from __future__ import annotations

import os

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from danmaku.bilibili.base_url import ENV_VAR, check_base_url, rebase_url

__all__ = ["ENV_VAR", "BaseUrlMiddleware", "rebase_url"]


class BaseUrlMiddleware:
    """Rewrites each request's origin to ``BILIBILI_BASE_URL``."""

    def __init__(self, base: str) -> None:
        self.base = check_base_url(base)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BaseUrlMiddleware:
        base = crawler.settings.get("BILIBILI_BASE_URL") or os.environ.get(ENV_VAR)
        if not base:
            raise NotConfigured("BILIBILI_BASE_URL not set: requests go to Bilibili")
        return cls(base)

    def process_request(self, request: Request) -> Request | None:
        url = rebase_url(request.url, self.base)
        if url == request.url:
            return None
        return request.replace(url=url, dont_filter=True)
