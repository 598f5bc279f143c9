"""The recorder's store writer: operations batched into transactions, off the event loop.

Rooms put operations (``danmaku.live.broadcasts``) on one bounded queue. The
writer takes what has arrived -- up to ``batch_rows`` danmaku, or whatever came
within ``flush_interval_s`` of the first -- applies it in one transaction through
``danmaku.store.writes`` on its own thread, and only after the commit hands the
rows that were new to the exporters. What follows from that:

- ``kill -9`` loses at most the batch being gathered (``flush_interval_s``, 0.5 s
  by default) and what was still queued behind it; nothing committed is lost.
- ``close()`` (Ctrl-C, SIGTERM) drains the queue and commits everything.
- Memory is bounded: at most ``queue_size`` operations wait, plus one batch.
- Backpressure: when the database is slow the queue fills, rooms wait in
  ``put()``, stop reading their websockets, and TCP slows the servers down.
- A failed transaction is retried, the same batch, with back-off: writes are
  idempotent (``dmid`` = message identity, unique per source), so a retry or a
  restart cannot duplicate a danmaku. A batch that fails for a reason other
  than the connection or a lock (a row the database refuses) is applied one
  operation at a time, and only the refused operations are dropped, counted
  and reported: one bad row must not stall every room.

Within a transaction, sources are resolved first, then danmaku inserted grouped
by source (one ``executemany`` each, not one per room message), then status
changes replayed in arrival order; exports follow the arrival order exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from danmaku.live.broadcasts import Add, Close, Mark, Open, OpenSource, Operation
from danmaku.live.export import Exporter
from danmaku.live.messages import Chat
from danmaku.store.models import LIVE_BROADCAST, Source
from danmaku.store.writes import (
    LIVE_CHAT,
    LIVE_DANMAKU_POOL,
    LIVE_OPEN_STATUSES,
    LIVE_SUPER_CHAT_POOL,
    add_live_danmaku,
    close_live_broadcast,
    close_stale_live_broadcasts,
    open_live_broadcast,
    set_live_status,
    source_key_live,
)

ORIGIN = "live-record"
"""``source.origin`` of recorded broadcasts (imported ones say ``live:{file}``)."""


class Beat(NamedTuple):
    """A heartbeat answer: goes to the text export only."""

    room_id: int
    wall_ms: int
    popularity: int


Item = Operation | Beat
_STOP = object()


@dataclass
class WriterStats:
    batches: int = 0
    rows_new: int = 0
    rows_known: int = 0
    sources_opened: int = 0
    retries: int = 0
    refused: int = 0
    export_errors: int = 0
    stored_by_room: Counter = field(default_factory=Counter)
    last_error: str | None = None


def chat_row(chat: Chat) -> tuple:
    """A chat as a row in ``LIVE_FIELDS`` order (``sender`` is the uid as text, as the importer's)."""
    return (chat.identity, chat.sent_at_ms, str(chat.uid), chat.text, chat.mode, chat.color,
            chat.font_size, LIVE_SUPER_CHAT_POOL if chat.super_chat else LIVE_DANMAKU_POOL)


def _transient(error: BaseException) -> bool:
    return isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated)


class StoreWriter:
    """Batches the recorder's operations into the store (see the module docstring).

    Args:
        engine: the store.
        exporters: fed with each commit's new rows, in arrival order.
        flush_interval_s: the longest a danmaku waits before its commit.
        batch_rows: the most danmaku in one transaction.
        queue_size: the most operations waiting (the memory bound).
        on_error: called with a one-line message when a commit or an export fails.
    """

    def __init__(self, engine: Engine, *, exporters: Sequence[Exporter] = (),
                 flush_interval_s: float = 0.5, batch_rows: int = 2000, queue_size: int = 20_000,
                 on_error: Callable[[str], None] | None = None, retry_cap_s: float = 30.0) -> None:
        self.engine = engine
        self.exporters = list(exporters)
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.on_error = on_error
        self.retry_cap_s = retry_cap_s
        self.stats = WriterStats()
        self._ids: dict[tuple[int, int], int] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-store")

    # -- the event-loop side -------------------------------------------------------------------

    async def put(self, item: Item) -> None:
        await self.queue.put(item)

    async def open_source(self, room_id: int, gap_ms: int, wall_ms: int) -> OpenSource | None:
        """The source a previous run left open for this room, if recent; stale ones are ended."""
        return await self._in_thread(self._open_source, room_id, gap_ms, wall_ms)

    async def run(self) -> None:
        """Commit batches until ``close()``; then drain, commit the rest and close the exporters."""
        try:
            while True:
                batch, stop = await self._gather()
                if batch:
                    await self._commit(batch)
                if stop:
                    return
        finally:
            await self._in_thread(self._close_exporters)
            self._thread.shutdown(wait=True)

    async def close(self) -> None:
        """Ask ``run()`` to finish once everything queued so far is committed."""
        await self.queue.put(_STOP)

    async def _gather(self) -> tuple[list[Item], bool]:
        first = await self.queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        rows = 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_interval_s
        queue = self.queue
        while rows < self.batch_rows:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
            rows += type(item) is Add
        return batch, False

    async def _commit(self, batch: list[Item]) -> None:
        delay = 0.25
        while True:
            try:
                await self._in_thread(self._apply_and_export, batch)
                return
            except Exception as error:  # the store refused or is unreachable: retry, report
                what = f"{type(error).__name__}: {str(error)[:160]}"
                if not _transient(error):  # a row the store refuses: isolate it, keep the rest
                    self._report(f"store refused a batch ({what}); applying it one operation at a time")
                    await self._in_thread(self._apply_one_by_one, batch)
                    return
                self.stats.retries += 1
                self._report(f"store write failed ({what}); retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_cap_s)

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _report(self, message: str) -> None:
        self.stats.last_error = message
        if self.on_error:
            self.on_error(message)

    # -- the writer thread -----------------------------------------------------------------------

    def _open_source(self, room_id: int, gap_ms: int, wall_ms: int) -> OpenSource | None:
        with self.engine.begin() as conn:
            close_stale_live_broadcasts(conn, room_id, wall_ms - gap_ms)
            row = conn.execute(
                select(Source.id, Source.started_at_ms, Source.ended_at_ms, Source.status)
                .where(Source.kind == LIVE_BROADCAST, Source.room_id == room_id,
                       Source.status.in_(LIVE_OPEN_STATUSES), Source.origin == ORIGIN)
                .order_by(Source.started_at_ms.desc()).limit(1)
            ).first()
        if row is None:
            return None
        source_id, started, ended, status = row
        self._ids[(room_id, started)] = source_id
        return OpenSource(started, ended if ended is not None else started, time.monotonic(), status)

    def _apply_and_export(self, batch: list[Item]) -> None:
        new_by_key, opened = self._apply(batch)
        self._export(batch, new_by_key, opened)

    def _apply_one_by_one(self, batch: list[Item]) -> None:
        for item in batch:
            try:
                self._apply_and_export([item])
            except Exception as error:
                self.stats.refused += 1
                self._report(f"store refused one {type(item).__name__} and dropped it "
                             f"({type(error).__name__}: {str(error)[:160]})")

    def _apply(self, batch: list[Item]) -> tuple[dict[tuple[int, int], set[int]], int]:
        """One transaction; returns the new dmids per source key and how many sources were opened."""
        ids: dict[tuple[int, int], int] = {}
        rows: dict[tuple[int, int], dict[int, tuple]] = {}
        first_open: dict[tuple[int, int], str] = {}
        adds = 0
        for item in batch:
            kind = type(item)
            if kind is Add:
                adds += 1
                rows.setdefault((item.room_id, item.started_ms), {}).setdefault(
                    item.chat.identity, chat_row(item.chat))
            elif kind is Open:
                first_open.setdefault((item.room_id, item.started_ms), item.status)
        new_by_key: dict[tuple[int, int], set[int]] = {}
        with self.engine.begin() as conn:
            def source_id(key: tuple[int, int]) -> int:
                found = self._ids.get(key) or ids.get(key)
                if found is None:
                    status = first_open.get(key)
                    if status is None:  # a source opened by an earlier run (resumed)
                        found = conn.execute(select(Source.id).where(
                            Source.key == source_key_live(*key))).scalar()
                    if found is None:
                        found = open_live_broadcast(conn, key[0], key[1], status or LIVE_CHAT, ORIGIN)
                    ids[key] = found
                return found

            for key in first_open:
                source_id(key)
            for key, by_identity in rows.items():
                new = add_live_danmaku(conn, source_id(key), list(by_identity.values()))
                new_by_key[key] = set(new)
            for item in batch:
                kind = type(item)
                if kind is Open or kind is Mark:
                    set_live_status(conn, source_id((item.room_id, item.started_ms)), item.status)
                elif kind is Close:
                    close_live_broadcast(conn, source_id((item.room_id, item.started_ms)), item.ended_ms)
        # committed: remember the ids, forget closed sources
        self._ids.update(ids)
        for item in batch:
            if type(item) is Close:
                self._ids.pop((item.room_id, item.started_ms), None)
        stats = self.stats
        stats.batches += 1
        for key, new in new_by_key.items():
            stats.rows_new += len(new)
            stats.stored_by_room[key[0]] += len(new)
        stats.rows_known += adds - sum(len(new) for new in new_by_key.values())
        stats.sources_opened += len(first_open)
        return new_by_key, len(first_open)

    def _export(self, batch: list[Item], new_by_key: dict[tuple[int, int], set[int]], opened: int) -> None:
        if not self.exporters:
            return
        try:
            for item in batch:
                kind = type(item)
                if kind is Add:
                    new = new_by_key.get((item.room_id, item.started_ms))
                    if new is not None and item.chat.identity in new:
                        new.discard(item.chat.identity)  # a second copy in the batch is not new
                        for exporter in self.exporters:
                            exporter.added(item.room_id, item.started_ms, item.chat)
                elif kind is Open:
                    for exporter in self.exporters:
                        exporter.opened(item.room_id, item.started_ms)
                elif kind is Close:
                    for exporter in self.exporters:
                        exporter.closed(item.room_id, item.started_ms)
                elif kind is Beat:
                    for exporter in self.exporters:
                        exporter.heartbeat(item.room_id, item.wall_ms, item.popularity)
            for exporter in self.exporters:
                exporter.flush()
        except OSError as error:
            self.stats.export_errors += 1
            self._report(f"export failed ({error}); the store has the rows")

    def _close_exporters(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.close()
            except OSError as error:
                self._report(f"closing an export failed ({error})")
