"""A mock of Bilibili's live chat (aiohttp): the HTTP endpoints and the chat websocket.

HTTP (paths as on Bilibili's hosts; the recorder reaches them through
``DANMAKU_BILIBILI_BASE_URL``): ``nav`` (WBI keys), ``finger/spi`` (device
cookies), ``room_init`` (short or long ids; 60004 for unknown rooms; the live
status follows what the room has played), ``getDanmuInfo`` (checks the
``buvid3`` cookie and ``w_rid`` with the crawler mock's independent WBI check,
answers ``-352`` otherwise; issues a fresh token each call, and its host list
points at this server's plain ``ws_port``, after a dead host when asked).

Websocket ``/sub``: expects the auth packet first and checks room, token
(the latest issued), ``buvid`` and ``protover``; answers op 8, then plays the
room's frames (``script.MockRoom``): ``Frame`` bytes, ``Drop`` (close the TCP
connection; the next connection resends the last frames), ``Gate`` (wait until
the test opens it). Heartbeats (op 2) are answered with op 3 at any time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.background_server import BackgroundServer
from tests.support.livemock import commands
from tests.support.livemock.script import Drop, Frame, MockRoom
from tests.support.mockbili.server import wbi_w_rid


@dataclass
class Gate:
    """Hold the room's frames here until ``opened`` is set."""

    opened: threading.Event = field(default_factory=threading.Event)


def dead_port() -> int:
    """A local port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveMock(BackgroundServer):
    """The mock; ``start()`` runs it on 127.0.0.1 in a thread and returns its URL."""

    name = "livemock"

    def __init__(self, rooms: list[MockRoom], *, risk_control_times: int = 0,
                 dead_host_first: bool = False, sessdata: str | None = None) -> None:
        super().__init__()
        self.rooms = {r.room_id: r for r in rooms}
        self.short = {r.short_id: r.room_id for r in rooms if r.short_id}
        self.img_key, self.sub_key = secrets.token_hex(16), secrets.token_hex(16)
        self.buvid3 = f"LIVEMOCK-{secrets.token_hex(8)}infoc"
        self.buvid4 = f"LIVEMOCK-{secrets.token_hex(8)}-4"
        self.risk_control_times = risk_control_times
        self.dead_host_first = dead_host_first
        self.sessdata = sessdata
        self.tokens: dict[int, str] = {}
        self.http_log: list[dict[str, Any]] = []
        self.auth_log: list[dict[str, Any]] = []
        self.done = {room_id: threading.Event() for room_id in self.rooms}
        self._dead_port = dead_port()
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------


    def wait_done(self, timeout: float = 30) -> bool:
        return all(event.wait(timeout) for event in self.done.values())

    def requests(self, fragment: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.http_log if fragment in e["path"]]

    # -- HTTP --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._log])
        app.router.add_get("/x/web-interface/nav", self.nav)
        app.router.add_get("/x/frontend/finger/spi", self.finger)
        app.router.add_get("/room/v1/Room/room_init", self.room_init)
        app.router.add_get("/xlive/web-room/v1/index/getDanmuInfo", self.danmu_info)
        app.router.add_get("/sub", self.sub)
        return app

    @web.middleware
    async def _log(self, request: web.Request, handler) -> web.StreamResponse:
        with self._lock:
            self.http_log.append({"path": request.path, "query": dict(request.query),
                                  "cookies": dict(request.cookies),
                                  "user_agent": request.headers.get("User-Agent", "")})
        return await handler(request)

    async def nav(self, request: web.Request) -> web.Response:
        base = "https://i0.hdslb.com/bfs/wbi"
        logged_in = bool(self.sessdata) and request.cookies.get("SESSDATA") == self.sessdata
        data: dict[str, Any] = {"isLogin": logged_in, "wbi_img": {
            "img_url": f"{base}/{self.img_key}.png", "sub_url": f"{base}/{self.sub_key}.png"}}
        if logged_in:
            data["mid"] = 777
        return web.json_response({"code": 0 if logged_in else -101, "message": "0", "data": data})

    async def finger(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "data": {"b_3": self.buvid3, "b_4": self.buvid4}})

    def _room(self, asked: str) -> MockRoom | None:
        if not asked.isdigit():
            return None
        room_id = self.short.get(int(asked), int(asked))
        return self.rooms.get(room_id)

    async def room_init(self, request: web.Request) -> web.Response:
        room = self._room(request.query.get("id", ""))
        if room is None:
            return web.json_response({"code": 60004, "msg": "直播间不存在", "message": "直播间不存在",
                                      "data": []})
        live_time = room.broadcasts[0].live_time_s if room.live and room.broadcasts else 0
        return web.json_response({"code": 0, "msg": "ok", "message": "ok", "data": {
            "room_id": room.room_id, "short_id": room.short_id, "uid": room.uid, "need_p2p": 0,
            "is_hidden": False, "is_locked": False, "is_portrait": False,
            "live_status": 1 if room.live else 0, "hidden_till": 0, "lock_till": 0,
            "encrypted": False, "pwd_verified": False, "live_time": live_time}})

    async def danmu_info(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        w_rid = params.pop("w_rid", None)
        risky = request.cookies.get("buvid3") != self.buvid3 or "wts" not in params or \
            w_rid != wbi_w_rid(params, self.img_key, self.sub_key)
        with self._lock:
            if not risky and self.risk_control_times > 0:
                self.risk_control_times -= 1
                risky = True
        if risky:
            return web.json_response({"code": -352, "message": "-352", "ttl": 1})
        room = self._room(params.get("id", ""))
        if room is None:
            return web.json_response({"code": 1, "message": "房间不存在", "ttl": 1})
        token = f"tok-{room.room_id}-{secrets.token_hex(6)}"
        self.tokens[room.room_id] = token
        hosts = [{"host": "127.0.0.1", "port": self.port, "wss_port": self._dead_port,
                  "ws_port": self.port}]
        if self.dead_host_first:
            hosts.insert(0, {"host": "127.0.0.1", "port": self._dead_port, "wss_port": self._dead_port,
                             "ws_port": self._dead_port})
        return web.json_response({"code": 0, "message": "0", "ttl": 1, "data": {
            "group": "live", "business_id": 0, "refresh_row_factor": 0.125, "refresh_rate": 100,
            "max_delay": 5000, "token": token, "host_list": hosts}})

    # -- the chat websocket ------------------------------------------------------------------

    async def sub(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        first = await ws.receive(timeout=10)
        room = self._authenticate(first)
        if room is None:
            await ws.send_bytes(commands.auth_reply(-101))
            await ws.close()
            return ws
        await ws.send_bytes(commands.auth_reply(0))
        reader = asyncio.create_task(self._heartbeats(ws, room))
        try:
            await self._play(ws, room, request)
        finally:
            if not ws.closed:
                await reader
            reader.cancel()
        return ws

    def _authenticate(self, message) -> MockRoom | None:
        if message.type != WSMsgType.BINARY or len(message.data) < 16:
            return None
        total, header, ver, op, _ = struct.unpack(">IHHII", message.data[:16])
        try:
            body = json.loads(message.data[header:total])
        except ValueError:
            return None
        entry = {"op": op, "ver": ver, **body}
        with self._lock:
            self.auth_log.append(entry)
        room = self.rooms.get(body.get("roomid"))
        if op != 7 or room is None or body.get("protover") != 3 or body.get("buvid") != self.buvid3:
            return None
        if body.get("key") != self.tokens.get(room.room_id):
            return None
        if room.refuse_auth > 0:
            room.refuse_auth -= 1
            return None
        return room

    async def _heartbeats(self, ws: web.WebSocketResponse, room: MockRoom) -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY and len(message.data) >= 16:
                op = struct.unpack(">I", message.data[8:12])[0]
                if op == 2:
                    await ws.send_bytes(commands.heartbeat_reply(room.popularity))

    async def _play(self, ws: web.WebSocketResponse, room: MockRoom, request: web.Request) -> None:
        while room.position < len(room.frames):
            index = room.position
            item = room.frames[index]
            room.position += 1
            if isinstance(item, Drop):
                if getattr(item, "done", False):
                    continue
                item.done = True  # type: ignore[attr-defined]
                room.position = max(0, index - item.replay)
                if request.transport is not None:
                    request.transport.close()
                return
            if isinstance(item, Gate):
                while not item.opened.is_set():
                    await asyncio.sleep(0.01)
                continue
            assert isinstance(item, Frame)
            try:
                if ws.closed:
                    raise ConnectionResetError
                await ws.send_bytes(item.data)
            except (ConnectionResetError, RuntimeError):  # the client went away: resend it next time
                room.position = index
                return
            if item.live is not None:
                room.live = item.live
            await asyncio.sleep(0)
        self.done[room.room_id].set()
