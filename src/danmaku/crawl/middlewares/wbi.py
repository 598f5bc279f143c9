"""WBI signing for endpoints under ``/wbi/`` (the uploader's video listing).

Bilibili wants ``wts`` (unix s) and ``w_rid`` (an md5 over the sorted, encoded
query and a "mixin key") on these endpoints. The key comes from two file names
in ``nav``'s ``data.wbi_img``; it rotates daily, so it is cached for
``DANMAKU_WBI_KEY_MAX_AGE`` seconds (default 6 h) and fetched again whenever a signed
request meets ``-352`` (``danmaku.crawl.middlewares.errors`` sends ``RISK_CONTROL``).
``nav`` is fetched by the middleware itself, through the other middlewares but
not the scheduler. Algorithm and test vectors: ``../shared/docs/bilibili-api.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from scrapy import Request
from scrapy.crawler import Crawler

from danmaku.crawl import api
from danmaku.crawl.middlewares import INTERNAL, WBI_KEY, WBI_WTS
from danmaku.crawl.middlewares.errors import RISK_CONTROL

logger = logging.getLogger(__name__)

MIXIN_KEY_ORDER = (
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49, 33, 9, 42, 19, 29,
    28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25,
    54, 21, 56, 59, 6, 63, 57, 62, 11, 36, 20, 34, 44, 52,
)
_DROP_FROM_VALUES = str.maketrans("", "", "!'()*")
_URI_COMPONENT_SAFE = "!'()*"  # with quote()'s own A-Za-z0-9_.-~: encodeURIComponent's set
SIGNATURE_TTL_S = 60
"""A signature older than this (a request that waited in a queue) is made again."""


class WbiKeyError(RuntimeError):
    """``nav`` did not give usable WBI keys."""


def mixin_key(img_key: str, sub_key: str) -> str:
    """The 32-character signing key: ``img_key + sub_key`` reordered, truncated."""
    raw = img_key + sub_key
    if len(raw) != 64:
        raise WbiKeyError(f"WBI keys must be 32+32 characters, got {len(img_key)}+{len(sub_key)}")
    return "".join(raw[i] for i in MIXIN_KEY_ORDER)[:32]


def keys_from_nav(payload: Mapping) -> tuple[str, str]:
    """(img_key, sub_key): the file names, without extension, in ``data.wbi_img``."""
    try:
        wbi_img = payload["data"]["wbi_img"]
        return tuple(  # type: ignore[return-value]
            urlsplit(wbi_img[name]).path.rsplit("/", 1)[-1].split(".", 1)[0]
            for name in ("img_url", "sub_url")
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise WbiKeyError(f"nav answer without data.wbi_img ({error!r})") from None


def signed_query(params: Mapping[str, object], key: str, wts: int) -> str:
    """The query string with ``wts`` and ``w_rid`` for these parameters."""
    values = {str(k): str(v).translate(_DROP_FROM_VALUES) for k, v in params.items()}
    values["wts"] = str(wts)
    query = "&".join(
        f"{quote(k, safe=_URI_COMPONENT_SAFE)}={quote(v, safe=_URI_COMPONENT_SAFE)}"
        for k, v in sorted(values.items())
    )
    w_rid = hashlib.md5((query + key).encode("utf-8")).hexdigest()
    return f"{query}&w_rid={w_rid}"


def sign_url(url: str, key: str, wts: int) -> str:
    """``url`` signed afresh (any earlier ``wts``/``w_rid`` replaced)."""
    parts = urlsplit(url)
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if k not in ("wts", "w_rid")}
    return urlunsplit(parts._replace(query=signed_query(params, key, wts)))


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
        key = mixin_key(*keys_from_nav(payload))
        self.crawler.stats.inc_value("danmaku/wbi_key_fetches")
        logger.info("WBI keys fetched from nav")
        return key
