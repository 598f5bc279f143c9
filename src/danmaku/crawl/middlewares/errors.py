"""Bilibili's error answers: back off, record as gone, retry, give up -- never crash.

- HTTP 412 and code ``-412`` (request blocked) and code ``-352`` (risk control):
  the whole crawl pauses for an exponential, bounded, jittered delay, logged as a
  warning, then the request is tried again. ``-352`` also sends the
  ``RISK_CONTROL`` signal, so WBI keys and device cookies are fetched afresh.
  Base delays ``DANMAKU_BACKOFF_BASE`` (default 10 s) and ``DANMAKU_BLOCKED_BACKOFF_BASE``
  (60 s), doubling per attempt up to ``DANMAKU_BACKOFF_MAX`` (1800 s), plus up to
  ``DANMAKU_BACKOFF_JITTER`` (25 %); after ``DANMAKU_BACKOFF_RETRIES`` (8) back-offs the
  request is given up.
- HTTP 408/429/5xx: the same pause and retry, from ``DANMAKU_BACKOFF_BASE`` (Scrapy's
  ``RETRY_HTTP_CODES`` is emptied in ``danmaku.crawl.settings``: one place decides).
- HTTP 404 and codes ``-404``/``62002``/``62004``: ``Gone`` -- the request's
  errback records the video or page as gone.
- A JSON body that does not decode (truncated): retried like a network error
  (``RETRY_TIMES``), then ``GaveUp``.

``Gone`` and ``GaveUp`` are ``IgnoreRequest``\\ s: Scrapy hands them to the
request's errback, where the spider turns them into ``ProblemItem``\\ s.
Protobuf and XML bodies are checked by the spider, which knows their format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response

from danmaku.crawl import api
from danmaku.crawl.middlewares import BACKOFF, INTERNAL, WBI_KEY, WBI_WTS

logger = logging.getLogger(__name__)

RISK_CONTROL = object()
"""Signal sent on ``-352`` with ``request`` and ``response``."""


class Gone(IgnoreRequest):
    """The video or page is deleted or hidden (``-404``, ``62002``, ``62004``, HTTP 404)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"gone (code {code}): {message}")
        self.code = code
        self.message = message


class GaveUp(IgnoreRequest):
    """Back-offs or retries exhausted: the request is recorded as failed."""


NOT_JSON = object()
UNDECODABLE = object()


def json_payload(response: Response) -> object:
    """The decoded JSON body, ``NOT_JSON`` for other bodies, ``UNDECODABLE`` if broken.

    JSON is recognised by its content type or a first byte ``{``: protobuf bodies
    never start with that byte (it would be a group tag). Never strip first: a
    segment starts with ``\n`` (field 1) and then, often enough, ``{`` (a length).
    """
    content_type = response.headers.get(b"Content-Type", b"").lower()
    body = response.body
    if b"json" not in content_type and body[:1] != b"{":
        return NOT_JSON
    try:
        return json.loads(body)
    except ValueError:
        return UNDECODABLE


class BilibiliErrorsMiddleware:
    """Turns Bilibili's error answers into back-offs, retries and recorded problems."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.base = settings.getfloat("DANMAKU_BACKOFF_BASE", 10.0)
        self.blocked_base = settings.getfloat("DANMAKU_BLOCKED_BACKOFF_BASE", 60.0)
        self.max_delay = settings.getfloat("DANMAKU_BACKOFF_MAX", 1800.0)
        self.jitter = settings.getfloat("DANMAKU_BACKOFF_JITTER", 0.25)
        self.max_backoffs = settings.getint("DANMAKU_BACKOFF_RETRIES", 8)
        self._paused_until = 0.0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BilibiliErrorsMiddleware:
        return cls(crawler)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        status = response.status
        if status == 412:
            return await self._back_off(request, "HTTP 412 (request blocked)", blocked=True)
        if status in (408, 429) or status >= 500:
            return await self._back_off(request, f"HTTP {status}")
        if status == 404:
            self.crawler.stats.inc_value("danmaku/gone")
            raise Gone(404, "HTTP 404")
        payload = json_payload(response)
        if payload is NOT_JSON:
            return response
        if payload is UNDECODABLE:
            retry = get_retry_request(request, spider=self.crawler.spider,
                                      reason="undecodable JSON body", stats_base_key="danmaku/retry",
                                      give_up_log_level=logging.INFO)
            if retry is None:
                raise GaveUp(f"undecodable JSON body (HTTP {status}, {len(response.body)} bytes)")
            return retry
        code = payload.get("code") if isinstance(payload, dict) else None
        if code == api.CODE_RISK_CONTROL:
            self.crawler.signals.send_catch_log(RISK_CONTROL, request=request, response=response)
            return await self._back_off(request, "code -352 (risk control)")
        if code == api.CODE_BLOCKED:
            return await self._back_off(request, "code -412 (request blocked)", blocked=True)
        if code in api.GONE_CODES:
            self.crawler.stats.inc_value("danmaku/gone")
            raise Gone(code, str(payload.get("message", "")))
        return response

    def delay_for(self, attempt: int, *, blocked: bool) -> float:
        """Seconds to wait before try ``attempt + 1``: base * 2^attempt, capped, jittered."""
        base = self.blocked_base if blocked else self.base
        return min(self.max_delay, base * 2**attempt) * (1 + random.random() * self.jitter)

    async def _back_off(self, request: Request, reason: str, *, blocked: bool = False) -> Request:
        attempt = request.meta.get(BACKOFF, 0)
        stats = self.crawler.stats
        if attempt >= self.max_backoffs:
            stats.inc_value("danmaku/backoff_gave_up")
            raise GaveUp(f"{reason}; gave up after {attempt} back-offs")
        delay = self.delay_for(attempt, blocked=blocked)
        stats.inc_value("danmaku/backoffs")
        logger.warning("%s on %s: backing off %.1f s (back-off %d of at most %d)",
                       reason, request.url, delay, attempt + 1, self.max_backoffs)
        meta = {k: v for k, v in request.meta.items() if k not in (WBI_KEY, WBI_WTS)}
        meta[BACKOFF] = attempt + 1
        if request.meta.get(INTERNAL):
            # Sent by a middleware outside the scheduler: it waits here itself.
            await asyncio.sleep(delay)
        else:
            self._pause_crawl(delay)
        return request.replace(meta=meta, dont_filter=True)

    def _pause_crawl(self, delay: float) -> None:
        """Stop taking requests from the scheduler for ``delay`` seconds."""
        from twisted.internet import reactor

        until = time.monotonic() + delay
        if until <= self._paused_until:
            return
        self._paused_until = until
        self.crawler.engine.pause()
        reactor.callLater(delay, self._unpause)

    def _unpause(self) -> None:
        engine = self.crawler.engine
        if engine is None or time.monotonic() < self._paused_until - 0.01:
            return
        engine.unpause()
        # Wake the engine now rather than at its next 5-second heartbeat (a private
        # hook; without it the crawl still resumes, only later).
        nextcall = getattr(getattr(engine, "_slot", None), "nextcall", None)
        if nextcall is not None:
            nextcall.schedule()
