"""A mock of Bilibili's web API (aiohttp) serving a ``Catalog``, with injectable faults.

Endpoints (paths as on ``api.bilibili.com``; the crawler reaches them through
``BILIBILI_BASE_URL``): ``nav`` (WBI keys), ``finger/spi`` (device cookies),
``view``, the WBI-signed space listing (it *checks* ``w_rid``), ``dm/web/view``
and ``dm/web/seg.so`` (real protobuf bytes built with ``dm_pb2``, every element
carrying fields the ``.proto`` does not know), the deflated XML list and the
history endpoint (only with the right ``SESSDATA``). Danmaku endpoints and the
listing answer ``-352`` without the ``buvid3`` cookie from ``finger/spi``.

Faults are rules ``Fault(path_regex, kind, times)`` matched against
``path?query``: ``http412``, ``http503``, ``code-352``, ``code-412``,
``code62002`` (any ``code<N>``), ``timeout`` (answer after ``seconds``),
``truncate`` (declare more bytes than sent, then drop the connection) and
``corrupt`` (a body that does not decode). Every request is logged.

The WBI check here is written from ``../shared/docs/bilibili-api.md`` on its own,
not imported from the crawler.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import threading
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web

from danmaku.crawl.proto.dm_pb2 import DanmakuElem, DmSegConfig, DmWebViewReply
from tests.support.background_server import BackgroundServer
from tests.support.mockbili.catalog import Catalog, Danmaku, Page, china_date

WBI_TABLE = [46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49, 33, 9,
             42, 19, 29, 28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1,
             60, 51, 30, 4, 22, 25, 54, 21, 56, 59, 6, 63, 57, 62, 11, 36, 20, 34, 44, 52]
PROTOBUF = "application/octet-stream"
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# Fields a newer Bilibili might send: varint field 30 and bytes field 31.
UNKNOWN_FIELDS = _varint(30 << 3) + _varint(7) + _varint(31 << 3 | 2) + _varint(4) + b"mock"


def segment_body(items: list[Danmaku]) -> bytes:
    """A ``DmSegMobileReply`` body, each element followed by unknown fields."""
    out = bytearray()
    for d in items:
        elem = DanmakuElem(
            id=d.dmid, progress=d.position_ms, mode=d.mode, fontsize=d.font_size, color=d.color,
            midHash=d.sender, content=d.text, ctime=d.sent_at_ms // 1000, weight=10, pool=d.pool,
            idStr=str(d.dmid),
        ).SerializeToString() + UNKNOWN_FIELDS
        out += b"\x0a" + _varint(len(elem)) + elem
    return bytes(out)


def view_reply_body(page: Page) -> bytes:
    reply = DmWebViewReply(state=0, dm_sge=DmSegConfig(page_size=360_000, total=page.segments),
                           count=len(page.danmaku))
    return reply.SerializeToString() + _varint(10 << 3 | 2) + _varint(6) + b"player"


def xml_body(page: Page) -> bytes:
    """The raw-deflated XML list (texts XML cannot carry are left out, as Bilibili must)."""
    lines = [f'<?xml version="1.0" encoding="UTF-8"?><i><chatserver>chat.bilibili.com</chatserver>'
             f"<chatid>{page.cid}</chatid><mission>0</mission><maxlimit>{len(page.danmaku)}"
             f"</maxlimit><state>0</state><real_name>0</real_name><source>k-v</source>"]
    for d in sorted(page.danmaku, key=lambda d: (d.position_ms, d.dmid)):
        if _XML_ILLEGAL.search(d.text):
            continue
        p = (f"{d.position_ms / 1000:.5f},{d.mode},{d.font_size},{d.color},{d.sent_at_ms // 1000},"
             f"{d.pool},{d.sender},{d.dmid},10")
        lines.append(f'<d p="{p}">{escape(d.text).replace(chr(13), "&#13;")}</d>')
    lines.append("</i>")
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflate.compress("\n".join(lines).encode("utf-8")) + deflate.flush()


def wbi_w_rid(params: dict[str, str], img_key: str, sub_key: str) -> str:
    raw = img_key + sub_key
    key = "".join(raw[i] for i in WBI_TABLE)[:32]
    cleaned = {k: "".join(c for c in v if c not in "!'()*") for k, v in params.items()}
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(cleaned.items()))
    return hashlib.md5((query + key).encode()).hexdigest()


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``path`` (regex on path?query) with ``kind``."""

    path: str
    kind: str
    times: int = 1  # -1: forever
    seconds: float = 3.0


class MockBilibili(BackgroundServer):
    """The mock server; ``start()`` runs it on 127.0.0.1 in a thread and returns its URL."""

    name = "mockbili"

    def __init__(self, catalog: Catalog, *, space_page_size: int = 30,
                 sessdata: str | None = None, rotate_wbi_after: int | None = None,
                 port: int = 0) -> None:
        super().__init__(port)
        self.catalog = catalog
        self.space_page_size = space_page_size
        self.sessdata = sessdata
        self.rotate_wbi_after = rotate_wbi_after
        self.img_key, self.sub_key = secrets.token_hex(16), secrets.token_hex(16)
        self.buvid3 = f"MOCK-{secrets.token_hex(8)}infoc"
        self.buvid4 = f"MOCK-{secrets.token_hex(8)}-4"
        self.faults: list[Fault] = []
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._signed_ok = 0
        self._bvids = {v.bvid: v.aid for v in catalog.videos.values()}
        self._cache: dict[tuple, bytes] = {}

    # -- control ---------------------------------------------------------------------------

    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def requests(self, fragment: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.log if fragment in e["path"]]


    # -- the app ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_and_log])
        app.router.add_get("/x/web-interface/nav", self.nav)
        app.router.add_get("/x/frontend/finger/spi", self.finger)
        app.router.add_get("/x/web-interface/view", self.view)
        app.router.add_get("/x/space/wbi/arc/search", self.space)
        app.router.add_get("/x/v2/dm/web/view", self.dm_view)
        app.router.add_get("/x/v2/dm/web/seg.so", self.segment)
        app.router.add_get("/x/v1/dm/list.so", self.xml_list)
        app.router.add_get("/x/v2/dm/web/history/seg.so", self.history)
        return app

    def _take_fault(self, target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times != 0 and re.search(fault.path, target):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    @web.middleware
    async def _faults_and_log(self, request: web.Request, handler) -> web.StreamResponse:
        fault = self._take_fault(request.path_qs)
        entry = {"path": request.path, "query": request.query_string, "fault": None,
                 "cookies": sorted(request.cookies), "status": None}
        with self._lock:
            self.log.append(entry)
        kind = fault.kind if fault else None
        entry["fault"] = kind
        if kind == "timeout":
            await asyncio.sleep(fault.seconds)
        if kind == "http412":
            response: web.StreamResponse = web.Response(status=412, text="Precondition Failed")
        elif kind == "http503":
            response = web.Response(status=503, text="Service Unavailable")
        elif kind is not None and kind.startswith("code"):
            response = web.json_response({"code": int(kind[4:]), "message": "mock fault", "ttl": 1})
        else:
            response = await handler(request)
            if kind == "corrupt":
                response = _corrupted(response)
            elif kind == "truncate":
                entry["status"] = response.status
                return await _truncated(request, response)
        entry["status"] = response.status
        return response

    def _needs_buvid(self, request: web.Request) -> web.Response | None:
        if request.cookies.get("buvid3") != self.buvid3:
            return web.json_response({"code": -352, "message": "风控校验失败", "ttl": 1})
        return None

    async def nav(self, request: web.Request) -> web.Response:
        base = "https://i0.hdslb.com/bfs/wbi"
        return web.json_response({"code": -101, "message": "账号未登录", "ttl": 1, "data": {
            "isLogin": False,
            "wbi_img": {"img_url": f"{base}/{self.img_key}.png",
                        "sub_url": f"{base}/{self.sub_key}.png"},
        }})

    async def finger(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "message": "ok",
                                  "data": {"b_3": self.buvid3, "b_4": self.buvid4}})

    async def view(self, request: web.Request) -> web.Response:
        query = request.query
        aid = int(query["aid"]) if query.get("aid", "").isdigit() else self._bvids.get(
            query.get("bvid", ""), -1)
        video = self.catalog.videos.get(aid)
        if video is None or aid in self.catalog.gone:
            return web.json_response({"code": -404, "message": "啥都木有", "ttl": 1})
        pages = [{"cid": p.cid, "page": p.page, "from": "vupload", "part": p.part,
                  "duration": p.duration_s,
                  "dimension": {"width": 1920, "height": 1080, "rotate": 0}}
                 for p in video.pages]
        return web.json_response({"code": 0, "message": "0", "ttl": 1, "data": {
            "bvid": video.bvid, "aid": video.aid, "videos": len(pages), "tid": 17,
            "title": video.title, "pubdate": video.pubdate, "ctime": video.pubdate,
            "desc": "", "duration": sum(p.duration_s for p in video.pages),
            "owner": {"mid": video.mid, "name": self.catalog.uploaders.get(video.mid, ""),
                      "face": ""},
            "cid": video.pages[0].cid, "pages": pages,
        }})

    async def space(self, request: web.Request) -> web.Response:
        refused = self._needs_buvid(request)
        if refused:
            return refused
        params = dict(request.query)
        w_rid = params.pop("w_rid", None)
        with self._lock:
            img_key, sub_key = self.img_key, self.sub_key
        if "wts" not in params or w_rid != wbi_w_rid(params, img_key, sub_key):
            return web.json_response({"code": -352, "message": "风控校验失败", "ttl": 1})
        with self._lock:
            self._signed_ok += 1
            if self.rotate_wbi_after and self._signed_ok == self.rotate_wbi_after:
                self.img_key, self.sub_key = secrets.token_hex(16), secrets.token_hex(16)
        mid = int(params.get("mid", "0"))
        page_size = min(int(params.get("ps", "30")), self.space_page_size)
        page_number = int(params.get("pn", "1"))
        videos = sorted((v for v in self.catalog.videos.values() if v.mid == mid),
                        key=lambda v: (-v.pubdate, v.aid))
        chunk = videos[(page_number - 1) * page_size: page_number * page_size]
        return web.json_response({"code": 0, "message": "0", "ttl": 1, "data": {
            "list": {"tlist": {}, "vlist": [
                {"aid": v.aid, "bvid": v.bvid, "title": v.title, "created": v.pubdate,
                 "mid": v.mid, "length": "00:00"} for v in chunk]},
            "page": {"pn": page_number, "ps": page_size, "count": len(videos)},
        }})

    def _page(self, request: web.Request) -> Page | None:
        oid = request.query.get("oid", "")
        return self.catalog.page_by_cid(int(oid)) if oid.isdigit() else None

    async def dm_view(self, request: web.Request) -> web.Response:
        refused = self._needs_buvid(request)
        page = self._page(request)
        if refused or page is None:
            return refused or web.json_response({"code": -404, "message": "啥都木有"})
        return web.Response(body=self._cached(("view", page.cid), lambda: view_reply_body(page)),
                            content_type=PROTOBUF)

    async def segment(self, request: web.Request) -> web.Response:
        refused = self._needs_buvid(request)
        page = self._page(request)
        if refused or page is None:
            return refused or web.json_response({"code": -404, "message": "啥都木有"})
        index = int(request.query.get("segment_index", "1"))

        def build() -> bytes:
            return segment_body(sorted((d for d in page.danmaku if page.segment_of(d) == index),
                                       key=lambda d: (d.position_ms, d.dmid)))

        return web.Response(body=self._cached(("seg", page.cid, index), build),
                            content_type=PROTOBUF)

    async def xml_list(self, request: web.Request) -> web.Response:
        refused = self._needs_buvid(request)
        page = self._page(request)
        if refused or page is None:
            return refused or web.json_response({"code": -404, "message": "啥都木有"})
        body = self._cached(("xml", page.cid), lambda: xml_body(page))
        return web.Response(body=body, headers={"Content-Type": "text/xml; charset=utf-8",
                                                "Content-Encoding": "deflate"})

    async def history(self, request: web.Request) -> web.Response:
        if not self.sessdata or request.cookies.get("SESSDATA") != self.sessdata:
            return web.json_response({"code": -101, "message": "账号未登录", "ttl": 1})
        page = self._page(request)
        if page is None:
            return web.json_response({"code": -404, "message": "啥都木有"})
        date = request.query.get("date", "")
        items = [d for d in page.danmaku if china_date(d.sent_at_ms) == date]
        return web.Response(body=segment_body(items), content_type=PROTOBUF)

    def _cached(self, key: tuple, build) -> bytes:
        body = self._cache.get(key)
        if body is None:
            body = self._cache[key] = build()
        return body


def _corrupted(response: web.StreamResponse) -> web.Response:
    body = getattr(response, "body", b"") or b""
    if response.content_type == PROTOBUF:
        body = b"\x0a\xff\xff\xff\xff\x0f" + body  # field 1 claiming 4 GB: never decodes
    else:
        body = body[: len(body) // 2]
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return web.Response(body=body, status=response.status, headers=headers)


async def _truncated(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    body = getattr(response, "body", b"") or b""
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    stream = web.StreamResponse(status=response.status, headers=headers)
    stream.content_length = len(body) + 16
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return stream
