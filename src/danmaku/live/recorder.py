"""``danmaku live record``: many rooms in one asyncio process, into the store, for as long as it runs.

Each room is a ``RoomClient`` task (``client.py``) feeding a ``BroadcastTracker``
(``broadcasts.py``) whose operations go to the one ``StoreWriter``
(``storage.py``). A room's failures stay in its task: a room that does not exist
stops with its error shown, any other error is retried with back-off, and no
other room notices. The same room given twice (a short and a long id) is
recorded once.

The library never prints: ``on_status`` receives a room's ``RoomStatus`` when
its link or broadcast state changes, ``statuses()`` gives every room's counts
(the CLI polls it to draw the status lines), ``on_problem`` a line per store or
export failure. ``record()`` returns when ``stop`` is set,
after the writer has committed everything it was given (a clean stop loses
nothing); the summary is stored as the run's ``stats_json``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy import Engine

from danmaku.bilibili.base_url import base_url_from_env
from danmaku.bilibili.device import sessdata_from_env
from danmaku.live.api import LiveApi, Room
from danmaku.live.broadcasts import BroadcastTracker
from danmaku.live.client import HEARTBEAT_S, Backoff, RoomClient
from danmaku.live.export import Exporter, TxtExport, XmlExport
from danmaku.live.messages import Chat, Event, LiveEnded, LiveStarted
from danmaku.live.storage import Beat, StoreWriter
from danmaku.store.writes import max_danmaku_chars, now_ms, start_run, update_run

KIND = "live_record"
DEFAULT_GAP_MINUTES = 30.0
"""The importer's silence rule (``danmaku.importers.live_chat.DEFAULT_GAP_MINUTES``)."""
RATE_WINDOW_S = 60


@dataclass
class RecordOptions:
    """How ``record()`` runs; the CLI's options mirror these."""

    gap_minutes: float = DEFAULT_GAP_MINUTES
    export_txt: Path | None = None
    export_xml: Path | None = None
    flush_interval_s: float = 0.5
    batch_rows: int = 2000
    queue_size: int = 20_000
    api_interval_s: float = 1.0
    heartbeat_s: float = HEARTBEAT_S
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    blocked_backoff_s: float = 600.0
    base_url: str | None = None
    """None: ``DANMAKU_BILIBILI_BASE_URL`` if set, else Bilibili."""
    sessdata: str | None = None
    """None: ``DANMAKU_BILIBILI_SESSDATA`` if set, else anonymous."""
    max_connections: int = 0
    """Open TCP connections of the HTTP/websocket session (0: no limit; one per room is needed)."""


@dataclass
class RoomStatus:
    """One room's line in the status display."""

    room: int
    room_id: int | None = None
    connected: bool = False
    broadcasting: bool = False
    received: int = 0
    stored: int = 0
    per_minute: int = 0
    popularity: int | None = None
    reconnects: int = 0
    too_long: int = 0  # danmaku over the store's length cap, not stored
    last_error: str | None = None
    stopped: bool = False


@dataclass
class RecordSummary:
    rooms: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    sources_opened: int = 0
    protocol_errors: int = 0
    unreadable: int = 0
    store_retries: int = 0
    store_refused: int = 0
    too_long: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


class _Rate:
    """Events in the last minute, in one-second buckets (constant memory per room)."""

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.total = 0

    def add(self, now: float) -> None:
        second = int(now)
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])
        self.total += 1
        self._trim(second)

    def value(self, now: float) -> int:
        self._trim(int(now))
        return self.total

    def _trim(self, second: int) -> None:
        while self.buckets and self.buckets[0][0] <= second - RATE_WINDOW_S:
            self.total -= self.buckets.popleft()[1]


class _RoomRecorder:
    """A ``RoomHandler``: one room's tracker, counters and status."""

    def __init__(self, recorder: Recorder, room: int) -> None:
        self.recorder = recorder
        self.status = RoomStatus(room=room)
        self.tracker: BroadcastTracker | None = None
        self.rate = _Rate()
        self.client: RoomClient | None = None
        self._pending: list = []

    async def on_room(self, room: Room) -> bool:
        recorder = self.recorder
        owner = recorder.owners.setdefault(room.room_id, self)
        if owner is not self:
            self.status.last_error = f"same room as {owner.status.room} (room id {room.room_id})"
            self.status.stopped = True
            self._changed()
            return False
        if room.short_id:
            recorder.short_ids[room.room_id] = room.short_id
        self.status.room_id = room.room_id
        if self.tracker is None:
            resumed = await recorder.writer.open_source(room.room_id, recorder.gap_ms, now_ms())
            self.tracker = BroadcastTracker(room.room_id, recorder.gap_ms, self._pending.append, resumed)
        self.tracker.status(room.live, room.live_since_ms, now_ms(), time.monotonic())
        await self._push()
        return True

    async def on_event(self, event: Event) -> None:
        tracker = self.tracker
        now = time.monotonic()
        if type(event) is Chat:
            if len(event.text) > self.recorder.max_chars:  # the store's cap (danmaku.store.writes)
                self.status.too_long += 1
                return
            tracker.chat(event, now)
            self.status.received += 1
            self.rate.add(now)
        elif type(event) is LiveStarted:
            tracker.live(event.at_ms, now_ms(), now)
        elif type(event) is LiveEnded:
            tracker.ended(now_ms())
        await self._push()

    async def on_popularity(self, value: int) -> None:
        self.status.popularity = value
        if self.recorder.options.export_txt is not None and self.status.room_id is not None:
            await self.recorder.writer.put(Beat(self.status.room_id, now_ms(), value))

    def on_link(self, connected: bool, error: str | None) -> None:
        status = self.status
        if not connected and status.connected:
            status.reconnects += 1
        status.connected = connected
        if error is not None:
            status.last_error = error
        self._changed()

    async def tick(self, now: float) -> None:
        if self.tracker is not None:
            self.tracker.tick(now)
            await self._push()

    async def _push(self) -> None:
        if self._pending:
            pending = self._pending[:]  # the tracker holds this very list: empty it in place
            self._pending.clear()
            put = self.recorder.writer.put
            for item in pending:
                await put(item)
        if self.tracker is not None and self.tracker.broadcasting != self.status.broadcasting:
            self.status.broadcasting = self.tracker.broadcasting
            self._changed()

    def _changed(self) -> None:
        self.recorder.changed(self)


class Recorder:
    """Records many rooms into one store; see the module docstring.

    Args:
        engine: the store (migrated: ``danmaku.store.db.make_engine``).
        rooms: room ids as users know them (short or long).
        options: ``RecordOptions``.
        on_status: receives a room's ``RoomStatus`` when its link or broadcast state changes or
            it meets an error (counts move too often for a callback: poll ``statuses()``).
        on_problem: receives one line per store or export problem.
    """

    def __init__(self, engine: Engine, rooms: Sequence[int], options: RecordOptions | None = None, *,
                 on_status: Callable[[RoomStatus], None] | None = None,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.rooms = list(dict.fromkeys(rooms))
        self.options = options or RecordOptions()
        self.on_status = on_status
        self.on_problem = on_problem
        self.gap_ms = int(self.options.gap_minutes * 60_000)
        self.max_chars = max_danmaku_chars()
        self.owners: dict[int, _RoomRecorder] = {}
        self.short_ids: dict[int, int] = {}
        self.handlers: list[_RoomRecorder] = []
        self.writer: StoreWriter = None  # type: ignore[assignment]  (made in record())
        self.summary = RecordSummary(rooms=len(self.rooms))

    def changed(self, handler: _RoomRecorder) -> None:
        if self.on_status is not None:
            handler.status.stored = self.writer.stats.stored_by_room.get(handler.status.room_id or -1, 0)
            handler.status.per_minute = handler.rate.value(time.monotonic())
            self.on_status(handler.status)

    def statuses(self) -> list[RoomStatus]:
        """Every room's status, counts refreshed."""
        now = time.monotonic()
        for handler in self.handlers:
            handler.status.stored = self.writer.stats.stored_by_room.get(handler.status.room_id or -1, 0)
            handler.status.per_minute = handler.rate.value(now)
        return [handler.status for handler in self.handlers]

    def _exporters(self) -> list[Exporter]:
        exporters: list[Exporter] = []
        if self.options.export_txt is not None:
            exporters.append(TxtExport(self.options.export_txt))
        if self.options.export_xml is not None:
            exporters.append(XmlExport(self.options.export_xml, short_ids=self.short_ids))
        return exporters

    async def record(self, stop: asyncio.Event) -> RecordSummary:
        """Record until ``stop`` is set; then stop the rooms, commit everything and return."""
        started = time.perf_counter()
        options = self.options
        run_id = await asyncio.to_thread(start_run, self.engine, KIND, " ".join(map(str, self.rooms)))
        self.writer = StoreWriter(self.engine, exporters=self._exporters(),
                                  flush_interval_s=options.flush_interval_s, batch_rows=options.batch_rows,
                                  queue_size=options.queue_size, on_error=self._problem)
        writer_task = asyncio.create_task(self.writer.run(), name="live-store-writer")
        base_url = options.base_url if options.base_url is not None else base_url_from_env()
        sessdata = options.sessdata if options.sessdata is not None else sessdata_from_env()
        connector = aiohttp.TCPConnector(limit=options.max_connections)
        status = "failed"
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
            api = LiveApi(session, base_url=base_url, sessdata=sessdata,
                          min_interval_s=options.api_interval_s)
            tasks = []
            for room in self.rooms:
                handler = _RoomRecorder(self, room)
                handler.client = RoomClient(
                    api, room, handler, heartbeat_s=options.heartbeat_s,
                    backoff=Backoff(options.backoff_base_s, options.backoff_cap_s),
                    blocked_floor_s=options.blocked_backoff_s)
                self.handlers.append(handler)
                tasks.append(asyncio.create_task(self._room(handler), name=f"live-room-{room}"))
            ticker = asyncio.create_task(self._ticks(), name="live-silence")
            try:
                await stop.wait()
                status = "stopped"
            except asyncio.CancelledError:
                status = "interrupted"
                raise
            finally:
                ticker.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, ticker, return_exceptions=True)
                await self.writer.close()
                await writer_task
                self._summarise(started)
                await asyncio.to_thread(self._finish_run, run_id, status)
        return self.summary

    async def _room(self, handler: _RoomRecorder) -> None:
        """One room's task: its client, restarted after an unexpected error (reported)."""
        delay = self.options.backoff_base_s
        while True:
            try:
                await handler.client.run()
                handler.status.stopped = True
                handler._changed()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug or an unforeseen answer: this room only
                handler.status.last_error = f"{type(error).__name__}: {str(error)[:160]}"
                handler.status.connected = False
                handler._changed()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff_cap_s)

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, max(self.gap_ms / 4000, 0.05)))
            now = time.monotonic()
            for handler in self.handlers:
                await handler.tick(now)

    def _problem(self, message: str) -> None:
        if len(self.summary.problems) < 100:
            self.summary.problems.append(message)
        if self.on_problem:
            self.on_problem(message)

    def _summarise(self, started: float) -> None:
        summary = self.summary
        stats = self.writer.stats
        summary.received = sum(h.status.received for h in self.handlers)
        summary.too_long = sum(h.status.too_long for h in self.handlers)
        summary.stored = stats.rows_new
        summary.duplicates = stats.rows_known
        summary.sources_opened = stats.sources_opened
        summary.store_retries = stats.retries
        summary.store_refused = stats.refused
        for handler in self.handlers:
            if handler.client is not None:
                summary.protocol_errors += handler.client.stats.protocol_errors
                summary.unreadable += handler.client.stats.unreadable
        summary.seconds = time.perf_counter() - started

    def _finish_run(self, run_id: int, status: str) -> None:
        summary = self.summary
        data = asdict(summary)
        data["rooms"] = [asdict(s) for s in self.statuses()]
        with self.engine.begin() as conn:
            update_run(conn, run_id, status=status, files=0, sources=summary.sources_opened,
                       rows=summary.stored, rejected=summary.store_refused, skipped=0, stats=data,
                       finished=True)


async def record(engine: Engine, rooms: Sequence[int], options: RecordOptions | None = None, *,
                 stop: asyncio.Event | None = None,
                 on_status: Callable[[RoomStatus], None] | None = None,
                 on_problem: Callable[[str], None] | None = None) -> RecordSummary:
    """Record ``rooms`` until ``stop`` is set (or the task is cancelled)."""
    recorder = Recorder(engine, rooms, options, on_status=on_status, on_problem=on_problem)
    return await recorder.record(stop or asyncio.Event())
