"""Anonymous device cookies on every request; the user's SESSDATA only where needed.

Since 2024-2025 Bilibili answers ``-352`` to listings and danmaku requests that
lack the ``buvid3``/``buvid4`` cookies. They come from ``finger/spi`` (no login),
fetched once per crawl by this middleware itself and again after
``DANMAKU_BUVID_REFRESH_AFTER`` (default 3) ``-352`` answers.

``SESSDATA`` is a logged-in session: read only from the environment variable
``DANMAKU_BILIBILI_SESSDATA``, sent only to the danmaku-history endpoint, never put
in settings, logs, items or the store. Scrapy's own cookie handling is off
(``COOKIES_ENABLED = False``): this middleware is the only cookie source. The pure
parts are ``danmaku.bilibili.device``, shared with the live recorder.

Cookies are attached at send time only, in ``process_request``, and taken off
again from every request that goes (back) to the scheduler (the
``request_scheduled`` signal): a request that backs off, a retry that
``get_retry_request`` copied from a sent request, anything a callback yields.
The scheduler is where requests are serialised -- JOBDIR files on Ctrl-C, the
shared Redis queue -- so the login cookie never reaches a disk or another
machine; the request gets it back when it is next sent.
"""

from __future__ import annotations

import asyncio
import json
import logging

from scrapy import Request, signals
from scrapy.crawler import Crawler

from danmaku.bilibili.device import SESSDATA_ENV, cookie_header, cookies_from_finger, sessdata_from_env
from danmaku.crawl import api
from danmaku.crawl.middlewares import INTERNAL
from danmaku.crawl.middlewares.errors import RISK_CONTROL

logger = logging.getLogger(__name__)

__all__ = ["SESSDATA_ENV", "DeviceCookiesMiddleware", "sessdata_from_env"]


def drop_cookies(request: Request) -> None:
    """Take the Cookie header off a request about to be queued (this middleware adds it back)."""
    request.headers.pop("Cookie", None)


class DeviceCookiesMiddleware:
    """Adds ``buvid3``/``buvid4`` (and, for history requests, ``SESSDATA``) as the Cookie header."""

    def __init__(self, crawler: Crawler, refresh_after: int, sessdata: str | None) -> None:
        self.crawler = crawler
        self.refresh_after = refresh_after
        self._sessdata = sessdata
        self._cookies: dict[str, str] | None = None
        self._risk_hits = 0
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DeviceCookiesMiddleware:
        middleware = cls(crawler, crawler.settings.getint("DANMAKU_BUVID_REFRESH_AFTER", 3),
                         sessdata_from_env())
        crawler.signals.connect(middleware.risk_control, signal=RISK_CONTROL)
        crawler.signals.connect(drop_cookies, signal=signals.request_scheduled)
        return middleware

    def risk_control(self, request: Request) -> None:
        self._risk_hits += 1
        if self._risk_hits >= self.refresh_after:
            self._risk_hits = 0
            self._cookies = None

    async def process_request(self, request: Request) -> None:
        if request.meta.get(INTERNAL) == "device cookies":
            return
        cookies = dict(await self.device_cookies())
        if self._sessdata and api.is_history_url(request.url):
            cookies["SESSDATA"] = self._sessdata
        if cookies:
            request.headers["Cookie"] = cookie_header(cookies)

    async def device_cookies(self) -> dict[str, str]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._cookies is None:
                self._cookies = await self._fetch()
        return self._cookies

    async def _fetch(self) -> dict[str, str]:
        request = Request(api.finger_url(), meta={INTERNAL: "device cookies"}, dont_filter=True)
        try:
            response = await self.crawler.engine.download_async(request)
            cookies = cookies_from_finger(json.loads(response.body))
        except Exception as error:  # crawl on without them, and say so
            logger.warning("could not get device cookies from finger/spi (%s); "
                           "continuing without them (expect -352 answers)", error)
            self.crawler.stats.inc_value("danmaku/device_cookie_failures")
            return {}
        self.crawler.stats.inc_value("danmaku/device_cookie_fetches")
        logger.info("device cookies buvid3/buvid4 fetched from finger/spi")
        return cookies
