"""WBI signing for endpoints under ``/wbi/`` (the uploader's video listing).

Bilibili wants ``wts`` (unix s) and ``w_rid`` (an md5 over the sorted, encoded
query and a "mixin key") on these endpoints. The key comes from two file names
in ``nav``'s ``data.wbi_img``; it rotates daily, so it is cached for
``DANMAKU_WBI_KEY_MAX_AGE`` seconds (default 6 h) and fetched again whenever a signed
request meets ``-352`` (``danmaku.crawl.middlewares.errors`` sends ``RISK_CONTROL``).
``nav`` is fetched by the middleware itself, through the other middlewares but
not the scheduler. The signing itself is ``danmaku.bilibili.wbi`` (shared with the live
recorder); algorithm and test vectors: ``../shared/docs/bilibili-api.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from scrapy import Request
from scrapy.crawler import Crawler

from danmaku.bilibili.wbi import (
    MIXIN_KEY_ORDER,
    WbiKeyError,
    key_from_nav,
    keys_from_nav,
    mixin_key,
    sign_url,
    signed_query,
)
from danmaku.crawl import api
from danmaku.crawl.middlewares import INTERNAL, WBI_KEY, WBI_WTS
from danmaku.crawl.middlewares.errors import RISK_CONTROL

logger = logging.getLogger(__name__)

__all__ = [  # the pure parts live in danmaku.bilibili.wbi; re-exported for the crawler's callers
    "MIXIN_KEY_ORDER", "WbiKeyError", "WbiMiddleware", "keys_from_nav", "mixin_key", "sign_url",
    "signed_query",
]

SIGNATURE_TTL_S = 60
"""A signature older than this (a request that waited in a queue) is made again."""


class WbiMiddleware:
    """Signs ``/wbi/`` requests with a cached mixin key from ``nav``."""

    def __init__(self, crawler: Crawler, max_age_s: float) -> None:
        self.crawler = crawler
        self.max_age_s = max_age_s
        self._key: str | None = None
        self._fetched_at = 0.0
        self._stale = False
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WbiMiddleware:
        middleware = cls(crawler, crawler.settings.getfloat("DANMAKU_WBI_KEY_MAX_AGE", 6 * 3600))
        crawler.signals.connect(middleware.risk_control, signal=RISK_CONTROL)
        return middleware

    def risk_control(self, request: Request) -> None:
        """A signed request met -352: its key may have rotated; fetch ``nav`` again."""
        if request.meta.get(WBI_KEY) is not None and request.meta.get(WBI_KEY) == self._key:
            self._stale = True

    async def process_request(self, request: Request) -> Request | None:
        if request.meta.get(INTERNAL) or not api.is_wbi_url(request.url):
            return None
        key = await self.current_key()
        now = time.time()
        fresh = now - request.meta.get(WBI_WTS, 0) < SIGNATURE_TTL_S
        if request.meta.get(WBI_KEY) == key and fresh:
            return None
        wts = int(now)
        meta = {**request.meta, WBI_KEY: key, WBI_WTS: wts}
        return request.replace(url=sign_url(request.url, key, wts), meta=meta, dont_filter=True)

    async def current_key(self) -> str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            expired = time.time() - self._fetched_at > self.max_age_s
            if self._key is None or self._stale or expired:
                self._key = await self._fetch_key()
                self._fetched_at = time.time()
                self._stale = False
        return self._key

    async def _fetch_key(self) -> str:
        request = Request(api.nav_url(), meta={INTERNAL: "wbi keys"}, dont_filter=True)
        response = await self.crawler.engine.download_async(request)
        try:
            payload = json.loads(response.body)
        except ValueError as error:
            raise WbiKeyError(f"nav answered HTTP {response.status} without JSON") from error
        key = key_from_nav(payload)
        self.crawler.stats.inc_value("danmaku/wbi_key_fetches")
        logger.info("WBI keys fetched from nav")
        return key
