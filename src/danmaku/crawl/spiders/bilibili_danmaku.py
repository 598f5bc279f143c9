"""``scrapy crawl bilibili_danmaku``: every danmaku of the given videos, page by page.

Arguments (``-a name=value``, any combination)::

    bvid=BV1xx...,BV1yy...    aid=170001,av53711561    mid=349991143,375504219
    list=../shared/data/av_data_list.txt    history_days=0

Flow per video: ``view`` (title, owner, pages) -> one ``PageItem`` per page
(cid) -> ``dm/web/view`` (segment count; ceil(duration / 6 min) when it fails) ->
every protobuf segment -> the XML list when a segment cannot be had. With
``mid=`` the uploader's WBI-signed video listing is read first, every page of
it. With ``history_days=N`` and ``DANMAKU_BILIBILI_SESSDATA`` in the environment, the
danmaku history of the first N days after publication is read as well.

Requests are ordered so that videos finish one after another (segments before
new videos): memory stays flat and an interrupted crawl has whole pages done.
Errors never stop the crawl: they come back as ``ProblemItem``\\ s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import scrapy
from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import DontCloseSpider
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from danmaku.crawl import api
from danmaku.crawl.danmaku import DecodeError, decode_segment, decode_view, parse_xml, segment_count
from danmaku.crawl.items import CLOSED, FAILED, FALLBACK, GONE, DanmakuItem, PageItem, ProblemItem
from danmaku.crawl.middlewares.device import SESSDATA_ENV, sessdata_from_env
from danmaku.crawl.middlewares.errors import NOT_JSON, Gone, json_payload
from danmaku.crawl.scaling import apply_redis_mode, redis_url
from danmaku.crawl.targets import TargetError, Targets, parse_targets

CHINA_OFFSET = timedelta(hours=8)

# Higher runs first: finish the videos in hand before opening new ones.
PRIORITY_SPACE = 0
PRIORITY_VIEW = 10
PRIORITY_DM_VIEW = 20
PRIORITY_SEGMENT = 30


def read_arguments(bvid: str | None = None, aid: str | None = None, mid: str | None = None,
                   list: str | None = None, history_days: str | int = 0) -> tuple[Targets, int]:
    """The spider's ``-a`` arguments, checked; ``TargetError`` says what is wrong."""
    targets = parse_targets(bvid=bvid, aid=aid, mid=mid, list_path=list)
    if not targets:
        raise TargetError("nothing to crawl: give -a bvid=BV..., -a aid=..., -a mid=... "
                          "or -a list=FILE")
    try:
        days = int(history_days)
    except ValueError:
        raise TargetError(f"history_days wants a number of days, got {history_days!r}") from None
    if days > 0 and not sessdata_from_env():
        raise TargetError(f"history_days needs a logged-in SESSDATA cookie in ${SESSDATA_ENV}")
    return targets, days


ARGUMENTS = ("bvid", "aid", "mid", "list", "history_days")


class BilibiliDanmakuSpider(scrapy.Spider):
    """Video danmaku of Bilibili into the danmaku store (see the module docstring)."""

    name = "bilibili_danmaku"

    def __init__(self, bvid: str | None = None, aid: str | None = None, mid: str | None = None,
                 history_days: str | int = 0, **kwargs) -> None:
        list_path = kwargs.pop("list", None)
        super().__init__(**kwargs)
        self.targets, self.history_days = read_arguments(
            bvid=bvid, aid=aid, mid=mid, list=list_path, history_days=history_days)
        self._last_activity = time.monotonic()

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        apply_redis_mode(settings)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args, **kwargs) -> BilibiliDanmakuSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.redis_idle_s = crawler.settings.getfloat("DANMAKU_REDIS_IDLE_SECONDS", 60.0)
        if redis_url(crawler.settings):
            crawler.signals.connect(spider._wait_for_other_workers, signal=signals.spider_idle)
        return spider

    def _wait_for_other_workers(self) -> None:
        """Redis mode: other workers may still add requests; stay a while."""
        if time.monotonic() - self._last_activity < self.redis_idle_s:
            raise DontCloseSpider

    # -- requests --------------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Request]:
        for mid in self.targets.mids:
            yield self._space_request(mid, 1, api.SPACE_PAGE_SIZE)
        for aid in self.targets.aids:
            yield self._view_request(aid)

    def _space_request(self, mid: int, page: int, page_size: int) -> Request:
        return Request(api.space_url(mid, page, page_size), callback=self.parse_space,
                       errback=self.on_error, priority=PRIORITY_SPACE,
                       meta={"mid": mid, "pn": page})

    def _view_request(self, aid: int) -> Request:
        return Request(api.view_url(aid), callback=self.parse_view, errback=self.on_error,
                       priority=PRIORITY_VIEW, meta={"aid": aid})

    def _segment_requests(self, meta: dict, count: int) -> Iterator[Request]:
        for index in range(1, count + 1):
            yield Request(api.segment_url(meta["cid"], meta["aid"], index),
                          callback=self.parse_segment, errback=self.on_segment_error,
                          priority=PRIORITY_SEGMENT, meta={**meta, "segment": index})
        for date in self._history_dates(meta.get("published_at_ms")):
            yield Request(api.history_url(meta["cid"], date), callback=self.parse_history,
                          errback=self.on_error, priority=PRIORITY_SEGMENT,
                          meta={**meta, "date": date})

    def _xml_request(self, meta: dict) -> Request:
        return Request(api.xml_url(meta["cid"]), callback=self.parse_xml, errback=self.on_error,
                       priority=PRIORITY_SEGMENT, meta={**meta, "segment": 0})

    def _history_dates(self, published_at_ms: int | None) -> list[str]:
        if self.history_days <= 0 or not published_at_ms:
            return []
        first = (datetime.fromtimestamp(published_at_ms / 1000, UTC) + CHINA_OFFSET).date()
        return [(first + timedelta(days=n)).isoformat() for n in range(self.history_days)]

    # -- callbacks -------------------------------------------------------------------------

    def _payload(self, response: Response) -> dict | None:
        self._last_activity = time.monotonic()
        payload = json_payload(response)
        return payload if isinstance(payload, dict) else None

    def parse_space(self, response: Response) -> Iterator[Request | ProblemItem]:
        payload = self._payload(response)
        if not payload or payload.get("code") != api.CODE_OK:
            yield self._problem(FAILED, response, f"space listing: {_code_text(payload)}")
            return
        data = payload.get("data") or {}
        videos = (data.get("list") or {}).get("vlist") or []
        for video in videos:
            yield self._view_request(int(video["aid"]))
        if response.meta["pn"] == 1:
            paging = data.get("page") or {}
            page_size = int(paging.get("ps") or api.SPACE_PAGE_SIZE)
            pages = math.ceil(int(paging.get("count") or 0) / page_size)
            for page in range(2, pages + 1):
                yield self._space_request(response.meta["mid"], page, page_size)

    def parse_view(self, response: Response) -> Iterator[Request | PageItem | ProblemItem]:
        payload = self._payload(response)
        data = (payload or {}).get("data")
        if not payload or payload.get("code") != api.CODE_OK or not isinstance(data, dict):
            yield self._problem(FAILED, response, f"view: {_code_text(payload)}")
            return
        aid = int(data["aid"])
        pages = data.get("pages") or []
        owner = data.get("owner") or {}
        published_ms = int(data["pubdate"]) * 1000 if data.get("pubdate") else None
        for number, page in enumerate(pages):
            title = data.get("title")
            if len(pages) > 1 and title is not None:
                title = f"{title} (P{page.get('page')} {page.get('part', '')})".rstrip()
            item = PageItem(
                aid=aid, page=int(page["page"]), cid=int(page["cid"]), bvid=data.get("bvid"),
                title=title, uploader_mid=owner.get("mid"), duration_s=page.get("duration"),
                published_at_ms=published_ms, first_of_video=number == 0,
            )
            yield item
            meta = {"aid": aid, "page": item.page, "cid": item.cid, "duration_s": item.duration_s,
                    "published_at_ms": published_ms}
            yield Request(api.dm_view_url(item.cid, aid), callback=self.parse_dm_view,
                          errback=self.on_dm_view_error, priority=PRIORITY_DM_VIEW, meta=meta)

    def parse_dm_view(self, response: Response) -> Iterator[Request | ProblemItem]:
        self._last_activity = time.monotonic()
        layout = None
        if json_payload(response) is NOT_JSON:  # a JSON answer here is an error report
            try:
                layout = decode_view(response.body)
            except DecodeError:
                retry = self._retry(response, "undecodable dm/web/view")
                if retry is not None:
                    yield retry
                    return
                self.crawler.stats.inc_value("danmaku/dm_view_undecodable")
        meta = _page_meta(response.meta)
        if layout is not None and layout.closed:
            yield self._problem(CLOSED, response, "danmaku closed for this video")
            return
        yield from self._segment_requests(meta, segment_count(layout, meta["duration_s"]))

    def on_dm_view_error(self, failure: Failure) -> Iterator[Request | ProblemItem]:
        meta = _page_meta(failure.request.meta)
        if failure.check(Gone):
            yield self._problem(GONE, failure.request, str(failure.value))
            return
        self.crawler.stats.inc_value("danmaku/dm_view_failed")
        yield from self._segment_requests(meta, segment_count(None, meta["duration_s"]))

    def parse_segment(self, response: Response) -> Iterator[Request | DanmakuItem | ProblemItem]:
        self._last_activity = time.monotonic()
        meta = response.meta
        try:
            rows = decode_segment(response.body)
        except DecodeError:
            retry = self._retry(response, "undecodable protobuf segment")
            if retry is not None:
                yield retry
                return
            yield self._problem(FALLBACK, response,
                                f"segment {meta['segment']} undecodable; XML list used")
            yield self._xml_request(_page_meta(meta))
            return
        yield DanmakuItem(aid=meta["aid"], page=meta["page"], cid=meta["cid"], via="segment",
                          segment=meta["segment"], rows=rows)

    def on_segment_error(self, failure: Failure) -> Iterator[Request | ProblemItem]:
        request = failure.request
        if failure.check(Gone):
            yield self._problem(GONE, request, str(failure.value))
            return
        reason = f"segment {request.meta['segment']}: {_failure_text(failure)}; XML list used"
        yield self._problem(FALLBACK, request, reason)
        yield self._xml_request(_page_meta(request.meta))

    def parse_xml(self, response: Response) -> Iterator[Request | DanmakuItem | ProblemItem]:
        self._last_activity = time.monotonic()
        meta = response.meta
        try:
            rows = parse_xml(response.body)
        except ValueError as error:
            retry = self._retry(response, "undecodable XML list")
            if retry is not None:
                yield retry
            else:
                yield self._problem(FAILED, response, f"XML list: {error}")
            return
        yield DanmakuItem(aid=meta["aid"], page=meta["page"], cid=meta["cid"], via="xml", rows=rows)

    def parse_history(self, response: Response) -> Iterator[Request | DanmakuItem | ProblemItem]:
        self._last_activity = time.monotonic()
        meta = response.meta
        payload = json_payload(response)
        if isinstance(payload, dict):
            yield self._problem(FAILED, response, f"history {meta['date']}: {_code_text(payload)}")
            return
        try:
            rows = decode_segment(response.body)
        except DecodeError:
            retry = self._retry(response, "undecodable history segment")
            if retry is not None:
                yield retry
            else:
                yield self._problem(FAILED, response, f"history {meta['date']}: undecodable")
            return
        yield DanmakuItem(aid=meta["aid"], page=meta["page"], cid=meta["cid"], via="history",
                          rows=rows)

    def on_error(self, failure: Failure) -> Iterator[ProblemItem]:
        kind = GONE if failure.check(Gone) else FAILED
        yield self._problem(kind, failure.request, _failure_text(failure))

    def _retry(self, response: Response, reason: str) -> Request | None:
        """The request again (``RETRY_TIMES`` at most) for a body that did not decode.

        Giving up is logged at INFO: the caller records a problem (or falls back).
        """
        retry = get_retry_request(response.request, spider=self, reason=reason,
                                  stats_base_key="danmaku/retry", give_up_log_level=logging.INFO)
        if retry is not None:
            retry.meta.pop("download_latency", None)
        return retry

    def _problem(self, kind: str, source: Request | Response, reason: str) -> ProblemItem:
        meta = source.meta
        return ProblemItem(kind=kind, url=source.url, reason=reason, aid=meta.get("aid"),
                           page=meta.get("page"), cid=meta.get("cid"))


def _page_meta(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("aid", "page", "cid", "duration_s", "published_at_ms")}


def _code_text(payload: dict | None) -> str:
    if payload is None:
        return "no JSON answer"
    return f"code {payload.get('code')}: {payload.get('message', '')}"


def _failure_text(failure: Failure) -> str:
    if failure.check(HttpError):
        return f"HTTP {failure.value.response.status}"
    return f"{type(failure.value).__name__}: {failure.value}"
