"""Every Bilibili endpoint, parameter and error code the crawler uses, in one place.

Bilibili changes its web API without notice; when it does, this module is the
one to edit. Facts and sources: ``../shared/docs/bilibili-api.md``. URLs are
built for the real hosts; ``danmaku.crawl.middlewares.base_url`` sends them elsewhere
(a mock server, a proxy) when ``BILIBILI_BASE_URL`` is set.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from danmaku.bilibili import API
from danmaku.bilibili.device import finger_url
from danmaku.bilibili.wbi import nav_url

__all__ = ["API", "finger_url", "nav_url"]  # shared with the live recorder; the rest below

SEGMENT_MS = 6 * 60 * 1000
"""Each protobuf segment covers six minutes of video."""

SPACE_PAGE_SIZE = 30

# Codes in the JSON envelope {"code": ..., "message": ..., "data": ...}.
CODE_OK = 0
CODE_RISK_CONTROL = -352
"""Risk control: slow down, refresh WBI keys (and device cookies), back off."""
CODE_BLOCKED = -412
"""Request blocked (also answered as HTTP 412): a long back-off."""
GONE_CODES = frozenset({-404, 62002, 62004})
"""The video or page is deleted or hidden: recorded as gone, never retried."""

REFERER = "https://www.bilibili.com/"


def view_url(aid: int) -> str:
    """Video metadata: title, owner, pages (one cid per page)."""
    return f"{API}/x/web-interface/view?aid={aid}"


def space_url(mid: int, page: int, page_size: int = SPACE_PAGE_SIZE) -> str:
    """One page of an uploader's videos, newest first (WBI-signed on the way out)."""
    query = urlencode({"mid": mid, "pn": page, "ps": page_size, "order": "pubdate"})
    return f"{API}/x/space/wbi/arc/search?{query}"


def dm_view_url(cid: int, aid: int) -> str:
    """Protobuf ``DmWebViewReply``: segment layout and danmaku count of a page."""
    return f"{API}/x/v2/dm/web/view?type=1&oid={cid}&pid={aid}"


def segment_url(cid: int, aid: int, index: int) -> str:
    """Protobuf ``DmSegMobileReply``: the danmaku of one 6-minute segment (1-based)."""
    return f"{API}/x/v2/dm/web/seg.so?type=1&oid={cid}&pid={aid}&segment_index={index}"


def xml_url(cid: int) -> str:
    """The older XML list (deflate-compressed): only the most recent danmaku of a page."""
    return f"{API}/x/v1/dm/list.so?oid={cid}"


def history_url(cid: int, date: str) -> str:
    """Protobuf danmaku of one page sent on ``date`` (YYYY-MM-DD); needs SESSDATA."""
    return f"{API}/x/v2/dm/web/history/seg.so?type=1&oid={cid}&date={date}"


def is_wbi_url(url: str) -> bool:
    """Endpoints under a ``/wbi/`` path must carry ``wts`` and ``w_rid``."""
    return "/wbi/" in urlsplit(url).path


def is_history_url(url: str) -> bool:
    """The only endpoint that may see the user's SESSDATA cookie."""
    return urlsplit(url).path.endswith("/dm/web/history/seg.so")
