"""One room's chat connection, kept up for as long as the recorder runs.

A session: ``room_init`` (the real room id and whether it is live), then
``getDanmuInfo`` (token and servers, reused until it is refused or 30 minutes
old), a websocket to one of the servers, the auth packet (op 7) and its answer
(op 8), a heartbeat (op 2) every 30 s answered by the popularity figure (op 3),
and messages (op 5) until the link drops. Then a back-off -- exponential with
jitter, reset once a session has lasted a minute -- and the next server in the
list. Auth refused (op 8 code -101, or -352) fetches a new token; -352 also new
WBI keys and device cookies. A room that does not exist ends its task; every
other failure is retried for ever.

Frames that are not this protocol are counted and dropped, the link kept.
The client reports through ``RoomHandler``; awaiting ``on_event`` is the
backpressure: while the store writer's queue is full the client stops reading,
and TCP slows the server down.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from danmaku.live.api import Blocked, DanmuInfo, LiveApi, LiveApiError, RiskControl, Room
from danmaku.live.messages import Event, MessageError, parse_command
from danmaku.live.protocol import (
    OP_AUTH_REPLY,
    OP_HEARTBEAT_REPLY,
    OP_MESSAGE,
    ProtocolError,
    auth_code,
    auth_packet,
    heartbeat_packet,
    iter_packets,
    popularity,
)

HEARTBEAT_S = 30.0
AUTH_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
TOKEN_MAX_AGE_S = 30 * 60
STABLE_AFTER_S = 60.0
"""A session that lasted this long resets the back-off."""
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CODE_TOKEN_REFUSED = -101
CODE_RISK_CONTROL = -352


class AuthRefused(RuntimeError):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"auth refused by the chat server (code {code})")
        self.code = code


@dataclass
class Backoff:
    """Exponential back-off with jitter: ``base * 2**n`` capped, times a random 0.5-1."""

    base_s: float = 1.0
    cap_s: float = 300.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, *, floor_s: float = 0.0) -> float:
        delay = min(self.cap_s, self.base_s * 2 ** min(self.attempts, 30))
        self.attempts += 1
        return max(floor_s, delay * self.rng.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class LinkStats:
    """What one room's link has seen (for the status line and the summary)."""

    sessions: int = 0
    protocol_errors: int = 0
    unreadable: int = 0
    auth_failures: int = 0
    last_error: str | None = None
    popularity: int | None = None


class RoomHandler(Protocol):
    """What a ``RoomClient`` reports to (the recorder)."""

    async def on_room(self, room: Room) -> bool:
        """Called at every (re)connection; False stops this room (e.g. a duplicate)."""

    async def on_event(self, event: Event) -> None: ...

    async def on_popularity(self, value: int) -> None: ...

    def on_link(self, connected: bool, error: str | None) -> None: ...


class RoomClient:
    """Keeps one room's chat connection up; ``run()`` returns only for a room that cannot exist.

    Args:
        api: the recorder's shared ``LiveApi``.
        room: the room id as the user gave it (short or long).
        handler: receives rooms, events, popularity and link changes.
        heartbeat_s: seconds between heartbeats (the server drops silent clients).
        backoff: the reconnect back-off (tests use a short one).
    """

    def __init__(self, api: LiveApi, room: int, handler: RoomHandler, *,
                 heartbeat_s: float = HEARTBEAT_S, backoff: Backoff | None = None,
                 blocked_floor_s: float = 600.0) -> None:
        self.api = api
        self.room = room
        self.handler = handler
        self.heartbeat_s = heartbeat_s
        self.backoff = backoff or Backoff()
        self.blocked_floor_s = blocked_floor_s
        self.stats = LinkStats()
        self._info: DanmuInfo | None = None
        self._host_index = 0

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            floor = 0.0
            try:
                room = await self.api.room(self.room)
                if not await self.handler.on_room(room):
                    return
                await self._session(room)
                error = "the chat server closed the connection"
            except AuthRefused as refused:
                self.stats.auth_failures += 1
                self._info = None
                if refused.code == CODE_RISK_CONTROL:
                    self.api.risk_control()
                error = str(refused)
            except Blocked as blocked:
                floor = self.blocked_floor_s
                error = str(blocked)
            except RiskControl as risk:
                self._info = None
                error = str(risk)
            except LiveApiError as failure:
                if failure.permanent:
                    self.stats.last_error = str(failure)
                    self.handler.on_link(False, str(failure))
                    return
                error = str(failure)
            except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError) as lost:
                error = f"{type(lost).__name__}: {str(lost)[:120]}".rstrip(": ")
            self.stats.last_error = error
            self.handler.on_link(False, error)
            self._host_index += 1
            if time.monotonic() - started >= STABLE_AFTER_S:
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next_delay(floor_s=floor))

    async def _danmu_info(self, room_id: int) -> DanmuInfo:
        info = self._info
        if info is None or time.monotonic() - info.fetched_at > TOKEN_MAX_AGE_S:
            info = self._info = await self.api.danmu_info(room_id)
        return info

    async def _session(self, room: Room) -> None:
        info = await self._danmu_info(room.room_id)
        host = info.hosts[self._host_index % len(info.hosts)]
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            ws = await self.api.session.ws_connect(
                self.api.websocket_url(host), headers=self.api.websocket_headers(),
                autoping=True, heartbeat=None, max_msg_size=MAX_MESSAGE_BYTES, compress=0)
        async with ws:
            self.stats.sessions += 1
            await ws.send_bytes(auth_packet(room.room_id, info.token, self.api.buvid3, self.api.uid))
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                while not await self._handle(await ws.receive(), ws, expect_auth=True):
                    pass
            self.handler.on_link(True, None)
            beats = asyncio.create_task(self._heartbeats(ws))
            try:
                silence_s = 2 * self.heartbeat_s + AUTH_TIMEOUT_S
                while True:
                    async with asyncio.timeout(silence_s):  # the server answers every heartbeat
                        message = await ws.receive()
                    if await self._handle(message, ws) is None:  # not under the timeout: a slow
                        return  # store (backpressure) must not look like a dead link
            finally:
                beats.cancel()

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        packet = heartbeat_packet()
        while not ws.closed:
            await ws.send_bytes(packet)
            await asyncio.sleep(self.heartbeat_s)

    async def _handle(self, message: aiohttp.WSMessage, ws: aiohttp.ClientWebSocketResponse, *,
                      expect_auth: bool = False) -> bool | None:
        """Handle one websocket message; None when the link is closed, True once auth is accepted."""
        if message.type == aiohttp.WSMsgType.BINARY:
            return await self._packets(message.data, expect_auth)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            if expect_auth:
                raise ConnectionError("closed before answering the auth packet")
            return None
        if message.type == aiohttp.WSMsgType.ERROR:
            raise ConnectionError(f"websocket error: {ws.exception()!s:.120}")
        return False  # text frames are not part of the protocol

    async def _packets(self, data: bytes, expect_auth: bool) -> bool:
        authed = False
        try:
            for packet in iter_packets(data):
                if packet.op == OP_MESSAGE:
                    try:
                        event = parse_command(packet.body)
                    except MessageError as error:
                        self.stats.unreadable += 1
                        self.stats.last_error = str(error)
                        continue
                    if event is not None:
                        await self.handler.on_event(event)
                elif packet.op == OP_HEARTBEAT_REPLY:
                    value = popularity(packet.body)
                    if value is not None:
                        self.stats.popularity = value
                        await self.handler.on_popularity(value)
                elif packet.op == OP_AUTH_REPLY:
                    code = auth_code(packet.body)
                    if code != 0:
                        raise AuthRefused(code)
                    authed = True
        except ProtocolError as error:
            self.stats.protocol_errors += 1
            self.stats.last_error = f"bad frame dropped: {error}"
        return authed or not expect_auth
