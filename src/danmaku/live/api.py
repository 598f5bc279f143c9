"""The live-chat HTTP endpoints: ``room_init`` (short -> real room id) and ``getDanmuInfo``.

Every URL, header and parameter the recorder sends over HTTP is here; facts:
``../shared/docs/bilibili-api.md``, "Live chat". ``getDanmuInfo`` is WBI-signed
and wants the ``buvid3``/``buvid4`` device cookies, or it answers ``-352`` --
with the crawler's very code for both (``danmaku.bilibili.wbi``,
``danmaku.bilibili.device``). Keys and cookies are fetched once per recorder and
again after ``-352``.

Polite by default: API requests of the whole recorder go out one at a time, at
least ``min_interval_s`` (1 s) apart, so starting hundreds of rooms costs
Bilibili a steady trickle, not a burst. Anonymous by default; the user's
``SESSDATA`` (``DANMAKU_BILIBILI_SESSDATA``) is sent, when given, to these
endpoints and the chat server only, and never appears in an error or a log.

With ``DANMAKU_BILIBILI_BASE_URL`` set, every request goes to that origin
(``danmaku.bilibili.base_url``); when it is a plain ``http://`` origin the chat
server is reached with plain ``ws://`` on the ``host``/``ws_port`` that
``getDanmuInfo`` names, so a local server without TLS can stand in for Bilibili.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from danmaku.bilibili import USER_AGENT
from danmaku.bilibili.base_url import check_base_url, rebase_url
from danmaku.bilibili.device import cookie_header, cookies_from_finger, finger_url
from danmaku.bilibili.wbi import key_from_nav, nav_url, signed_query

LIVE_API = "https://api.live.bilibili.com"
LIVE_REFERER = "https://live.bilibili.com/"
CODE_OK = 0
CODE_NOT_LOGGED_IN = -101
CODE_RISK_CONTROL = -352
CODE_BLOCKED = -412
ROOM_NOT_FOUND_CODES = frozenset({60004})
"""``room_init`` codes for a room id that does not exist (60004 "直播间不存在")."""
WBI_KEY_MAX_AGE_S = 6 * 3600
REQUEST_TIMEOUT_S = 15.0


def room_init_url(room: int) -> str:
    """Short or long room id -> ``data.room_id`` (the real one), ``uid``, ``live_status``."""
    return f"{LIVE_API}/room/v1/Room/room_init?id={room}"


def danmu_info_url() -> str:
    """Token and chat-server hosts of one room (WBI-signed; parameters from ``danmu_info_params``)."""
    return f"{LIVE_API}/xlive/web-room/v1/index/getDanmuInfo"


def danmu_info_params(room_id: int) -> dict[str, object]:
    return {"id": room_id, "type": 0}


DEFAULT_HOST = "broadcastlv.chat.bilibili.com"
"""The chat server to try when ``getDanmuInfo`` names none."""


class LiveApiError(RuntimeError):
    """An answer that is not ``code 0``, or no usable answer (message safe to show)."""

    def __init__(self, message: str, code: int | None = None, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent


class RiskControl(LiveApiError):
    """``-352``: refresh keys and cookies, back off."""


class Blocked(LiveApiError):
    """``-412`` or HTTP 412: the client is blocked for a while; back off long."""


@dataclass(frozen=True)
class Room:
    """What ``room_init`` says about a room."""

    room_id: int
    short_id: int
    uid: int
    live: bool
    live_since_ms: int | None


@dataclass(frozen=True)
class Host:
    host: str
    port: int
    wss_port: int
    ws_port: int


@dataclass(frozen=True)
class DanmuInfo:
    """A room's chat token and servers; ``fetched_at`` (monotonic s) lets callers age it out."""

    token: str
    hosts: tuple[Host, ...]
    fetched_at: float


def parse_room(payload: object, asked: int) -> Room:
    data = _data(payload, f"room_init {asked}")
    try:
        live_time = int(data.get("live_time") or 0)
        return Room(room_id=int(data["room_id"]), short_id=int(data.get("short_id") or 0),
                    uid=int(data.get("uid") or 0), live=int(data.get("live_status") or 0) == 1,
                    live_since_ms=live_time * 1000 if live_time > 0 else None)
    except (KeyError, TypeError, ValueError) as error:
        raise LiveApiError(f"room_init {asked}: unexpected answer ({error!r})") from None


def parse_danmu_info(payload: object, room_id: int, now: float) -> DanmuInfo:
    data = _data(payload, f"getDanmuInfo {room_id}")
    try:
        hosts = tuple(Host(str(h["host"]), int(h.get("port") or 2243), int(h.get("wss_port") or 443),
                           int(h.get("ws_port") or 2244)) for h in data.get("host_list") or [])
        return DanmuInfo(token=str(data["token"]), hosts=hosts or (Host(DEFAULT_HOST, 2243, 443, 2244),),
                         fetched_at=now)
    except (KeyError, TypeError, ValueError) as error:
        raise LiveApiError(f"getDanmuInfo {room_id}: unexpected answer ({error!r})") from None


def _data(payload: object, what: str) -> dict:
    if not isinstance(payload, dict):
        raise LiveApiError(f"{what}: answer is not a JSON object")
    code = payload.get("code")
    message = str(payload.get("message") or payload.get("msg") or "")[:80]
    if code == CODE_OK and isinstance(payload.get("data"), dict):
        return payload["data"]
    if code == CODE_RISK_CONTROL:
        raise RiskControl(f"{what}: risk control (-352)", code)
    if code == CODE_BLOCKED:
        raise Blocked(f"{what}: blocked (-412)", code)
    if what.startswith("room_init") and code in ROOM_NOT_FOUND_CODES:
        raise LiveApiError(f"{what}: no such room ({code} {message})", code, permanent=True)
    raise LiveApiError(f"{what}: code {code} {message}".rstrip(), code if isinstance(code, int) else None)


def websocket_url(host: Host, base_url: str | None) -> str:
    """``wss://host:wss_port/sub``, or ``ws://host:ws_port/sub`` under a plain-http base URL."""
    if base_url and urlsplit(base_url).scheme == "http":
        return f"ws://{host.host}:{host.ws_port}/sub"
    return f"wss://{host.host}:{host.wss_port}/sub"


class LiveApi:
    """HTTP calls of one recorder: shared rate limit, WBI key and device cookies.

    Args:
        session: the recorder's aiohttp session (its own cookie jar is not used:
            cookies are sent explicitly, so nothing the server sets is kept).
        base_url: ``DANMAKU_BILIBILI_BASE_URL`` or None for the real hosts.
        sessdata: the user's login cookie, or None (anonymous, the default).
        min_interval_s: the least time between two API requests.
    """

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str | None = None,
                 sessdata: str | None = None, min_interval_s: float = 1.0) -> None:
        self.session = session
        self.base_url = check_base_url(base_url) if base_url else None
        self._sessdata = sessdata
        self.min_interval_s = min_interval_s
        self._gate = asyncio.Lock()
        self._last_request = 0.0
        self._key: str | None = None
        self._key_at = 0.0
        self._cookies: dict[str, str] | None = None
        self._buvid3: str | None = None
        self._uid = 0
        self._setup = asyncio.Lock()
        self.requests = 0

    @property
    def uid(self) -> int:
        """The logged-in user's id (from ``nav``) when a SESSDATA was given, else 0."""
        return self._uid

    @property
    def buvid3(self) -> str | None:
        """The device id for auth packets (the last one fetched, also while a refresh is pending)."""
        return self._buvid3

    def risk_control(self) -> None:
        """Forget the WBI key and device cookies (after ``-352``); the next call fetches both."""
        self._key = None
        self._cookies = None

    def websocket_url(self, host: Host) -> str:
        return websocket_url(host, self.base_url)

    def websocket_headers(self) -> dict[str, str]:
        """Headers of the chat-server handshake: browser-like, with the same cookies as the API."""
        headers = {"User-Agent": USER_AGENT, "Origin": "https://live.bilibili.com"}
        cookie = cookie_header(self._cookie_jar())
        if cookie:
            headers["Cookie"] = cookie
        return headers

    async def room(self, room: int) -> Room:
        return parse_room(await self._get_json(room_init_url(room)), room)

    async def danmu_info(self, room_id: int) -> DanmuInfo:
        await self._ensure_keys()
        query = signed_query(danmu_info_params(room_id), self._key or "", int(time.time()))
        payload = await self._get_json(f"{danmu_info_url()}?{query}")
        try:
            return parse_danmu_info(payload, room_id, time.monotonic())
        except RiskControl:
            self.risk_control()
            raise

    async def _ensure_keys(self) -> None:
        async with self._setup:
            if self._cookies is None:
                self._cookies = cookies_from_finger(await self._get_json(finger_url(), cookies=False))
                self._buvid3 = self._cookies["buvid3"]
            if self._key is None or time.monotonic() - self._key_at > WBI_KEY_MAX_AGE_S:
                nav = await self._get_json(nav_url())
                self._key = key_from_nav(nav)
                self._key_at = time.monotonic()
                if self._sessdata:
                    data = nav.get("data") if isinstance(nav, dict) else None
                    self._uid = int((data or {}).get("mid") or 0) if (data or {}).get("isLogin") else 0

    def _cookie_jar(self) -> dict[str, str]:
        cookies = dict(self._cookies or {})
        if self._sessdata:
            cookies["SESSDATA"] = self._sessdata
        return cookies

    async def _get_json(self, url: str, *, cookies: bool = True) -> object:
        """GET one API URL (rebased under a base URL), rate-limited; its JSON or LiveApiError."""
        if self.base_url:
            url = rebase_url(url, self.base_url)
        headers = {"User-Agent": USER_AGENT, "Referer": LIVE_REFERER,
                   "Accept": "application/json, text/plain, */*"}
        jar = self._cookie_jar() if cookies else {}
        if jar:
            headers["Cookie"] = cookie_header(jar)
        path = urlsplit(url).path
        async with self._gate:
            wait = self._last_request + self.min_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_request = time.monotonic()
            self.requests += 1
        try:
            async with self.session.get(URL(url, encoded=True), headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            raise LiveApiError(f"{path}: {type(error).__name__} {_short(error)}") from None
        if status == 412:
            raise Blocked(f"{path}: HTTP 412 (blocked)", -412)
        if status != 200:
            raise LiveApiError(f"{path}: HTTP {status}")
        try:
            return json.loads(body)
        except ValueError:
            raise LiveApiError(f"{path}: HTTP 200 without JSON") from None


def _short(error: BaseException) -> str:
    """An exception's text, cut short (aiohttp's messages never hold our headers or cookies)."""
    return str(error)[:120]
