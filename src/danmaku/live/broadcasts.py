"""Which broadcast (store source) each message of a room belongs to: a pure state machine.

Rules, in order of strength:

- ``LIVE`` opens a new broadcast (started at the command's ``live_time``, else
  now) unless one opened on air is still open (the server often sends ``LIVE``
  twice); ``PREPARING`` closes it.
- A long silence closes the open source, the same rule as ``danmaku import
  live`` (``importers/live_chat.py``): a danmaku more than ``gap_ms`` after the
  previous one starts a new source, and an open source that has heard nothing
  for ``gap_ms`` on the local clock is closed.
- Chat while the room is not broadcasting is kept too ("between broadcasts"),
  in sources of status ``chat`` cut by the same silence rule.
- On every (re)connection ``room_init``'s live status reconciles what may have
  been missed while disconnected: live with nothing open on air opens a
  broadcast (and a broadcast seen live counts as active); not live with a
  broadcast open on air closes it at the last time it was seen.

The tracker only decides; it emits ``Open``/``Add``/``Close``/``Mark`` operations
that the store writer applies in order (``danmaku.live.storage``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from danmaku.live.messages import Chat
from danmaku.store.writes import LIVE_CHAT, LIVE_ON_AIR


class Open(NamedTuple):
    room_id: int
    started_ms: int
    status: str


class Add(NamedTuple):
    room_id: int
    started_ms: int
    chat: Chat


class Close(NamedTuple):
    room_id: int
    started_ms: int
    ended_ms: int


class Mark(NamedTuple):
    """An open source's status changes (chat -> on air)."""

    room_id: int
    started_ms: int
    status: str


Operation = Open | Add | Close | Mark


@dataclass
class OpenSource:
    """The source a room writes to: its start (its key), last danmaku, and status."""

    started_ms: int
    last_ms: int
    last_seen: float
    status: str


class BroadcastTracker:
    """One room's broadcasts.

    Args:
        room_id: the real (long) room id.
        gap_ms: the silence that ends a source (the importer's 30 minutes).
        emit: receives each operation, in order.
        resumed: the source a previous run left open (see ``storage.open_source``).
    """

    def __init__(self, room_id: int, gap_ms: int, emit: Callable[[Operation], object],
                 resumed: OpenSource | None = None) -> None:
        self.room_id = room_id
        self.gap_ms = gap_ms
        self.emit = emit
        self.open = resumed
        self.room_live = resumed is not None and resumed.status == LIVE_ON_AIR

    @property
    def broadcasting(self) -> bool:
        return self.room_live

    def chat(self, chat: Chat, now: float) -> None:
        """A danmaku or super chat arrived at monotonic time ``now``."""
        current = self.open
        if current is None or chat.sent_at_ms - current.last_ms > self.gap_ms or \
                (now - current.last_seen) * 1000 > self.gap_ms:
            if current is not None:
                self._close(current.last_ms)
            current = self._open(chat.sent_at_ms, now)
        if chat.sent_at_ms > current.last_ms:
            current.last_ms = chat.sent_at_ms
        current.last_seen = now
        self.emit(Add(self.room_id, current.started_ms, chat))

    def live(self, at_ms: int | None, wall_ms: int, now: float) -> None:
        """``LIVE``: a broadcast starts."""
        self.room_live = True
        if self.open is not None and self.open.status == LIVE_ON_AIR:
            return
        if self.open is not None:
            self._close(self.open.last_ms)
        self._open(at_ms or wall_ms, now, alive_ms=wall_ms)

    def ended(self, wall_ms: int) -> None:
        """``PREPARING``: the broadcast is over."""
        self.room_live = False
        if self.open is not None:
            self._close(max(wall_ms, self.open.last_ms) if self.open.status == LIVE_ON_AIR
                        else self.open.last_ms)

    def status(self, live: bool, since_ms: int | None, wall_ms: int, now: float) -> None:
        """``room_init`` at (re)connection: reconcile with what was missed."""
        current = self.open
        if live:
            self.room_live = True
            if current is None:
                self._open(since_ms or wall_ms, now, alive_ms=wall_ms)
            elif current.status == LIVE_ON_AIR:  # seen alive now: that counts as activity
                current.last_ms = max(current.last_ms, wall_ms)
                current.last_seen = now
            else:
                if since_ms is not None and since_ms > current.last_ms:
                    self._close(current.last_ms)
                    self._open(since_ms, now, alive_ms=wall_ms)
                else:  # the chat we were storing was the broadcast: its LIVE was missed
                    current.status = LIVE_ON_AIR
                    self.emit(Mark(self.room_id, current.started_ms, LIVE_ON_AIR))
        else:
            self.room_live = False
            if current is not None and current.status == LIVE_ON_AIR:
                self._close(current.last_ms)

    def tick(self, now: float) -> None:
        """Close the open source after ``gap_ms`` without a message (local clock)."""
        if self.open is not None and (now - self.open.last_seen) * 1000 > self.gap_ms:
            self._close(self.open.last_ms)

    def _open(self, started_ms: int, now: float, alive_ms: int | None = None) -> OpenSource:
        """A new source; ``alive_ms``: a time the broadcast is known to be on (counts as activity)."""
        status = LIVE_ON_AIR if self.room_live else LIVE_CHAT
        self.open = OpenSource(started_ms, max(started_ms, alive_ms or started_ms), now, status)
        self.emit(Open(self.room_id, started_ms, status))
        return self.open

    def _close(self, ended_ms: int) -> None:
        assert self.open is not None
        self.emit(Close(self.room_id, self.open.started_ms, ended_ms))
        self.open = None
