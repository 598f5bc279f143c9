"""Send every request to one origin: ``BILIBILI_BASE_URL`` (env ``DANMAKU_BILIBILI_BASE_URL``).

With it set, ``https://api.bilibili.com/x/v2/dm/web/seg.so?...`` goes to
``{BILIBILI_BASE_URL}/x/v2/dm/web/seg.so?...`` -- same path and query, whatever
the Bilibili host -- so one local server (``tests/mockbili``) or a forwarding
proxy can stand in for all of Bilibili. Unset (the default), the middleware
disables itself.

A rewritten request goes back to the scheduler (Scrapy's way for a middleware
to change a URL) with ``dont_filter``; the dupefilter and ``JOBDIR`` keep
seeing the original Bilibili URL.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

ENV_VAR = "DANMAKU_BILIBILI_BASE_URL"


def rebase_url(url: str, base: str) -> str:
    """``url`` with the scheme and host of ``base`` (and its path as a prefix); idempotent."""
    target = urlsplit(base)
    parts = urlsplit(url)
    prefix = target.path.rstrip("/")
    if (parts.scheme, parts.netloc) == (target.scheme, target.netloc) and (
        not prefix or parts.path == prefix or parts.path.startswith(prefix + "/")
    ):
        return url
    return urlunsplit((target.scheme, target.netloc, prefix + parts.path, parts.query, ""))


class BaseUrlMiddleware:
    """Rewrites each request's origin to ``BILIBILI_BASE_URL``."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"BILIBILI_BASE_URL must be http(s)://host[:port][/path]: {base!r}")
        self.base = base

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
