"""Rooms a mock chat server plays, built from real lines of the live-chat data set.

Texts, uids and user names are the data set's own (names from its SPEAKERNUM
lines). Times are the data set's, shifted by one offset per room so that the
room's last danmaku is a moment ago: gaps are kept (the importer's broadcasts
stay the same), and a recorder's "recent broadcast" rules see realistic clocks.
Each broadcast (a run of danmaku without a 30-minute gap) is played as
``LIVE``, its danmaku in bundles of a few packets -- zlib and brotli in turn,
with noise commands, protobuf bodies and ``DANMU_MSG:...`` variants mixed in --
then ``PREPARING``. Every ``sc_every``-th danmaku is sent as a super chat.
``expected`` is the truth a correct recorder must store.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from danmaku.importers.parsers import LiveDanmaku, parse_live_chat
from tests.support.livemock import commands

GAP_MS = 30 * 60_000


@dataclass(frozen=True)
class Sent:
    """One chat message the mock sends: what the store must hold for it."""

    sent_at_ms: int
    uid: int
    uname: str
    text: str
    super_chat: bool


@dataclass
class Drop:
    """Close the connection abruptly here; the next connection resends the last ``replay`` frames."""

    replay: int = 2


@dataclass
class Frame:
    data: bytes
    live: bool | None = None
    """What ``room_init`` says after this frame (LIVE -> True, PREPARING -> False)."""
    chats: int = 0
    """How many danmaku and super chats it carries."""


@dataclass
class Broadcast:
    live_time_s: int
    first_frame: int = 0
    """Index of its LIVE frame in ``MockRoom.frames``."""
    sent: list[Sent] = field(default_factory=list)


@dataclass
class MockRoom:
    room_id: int
    short_id: int = 0
    uid: int = 1
    frames: list = field(default_factory=list)
    broadcasts: list[Broadcast] = field(default_factory=list)
    refuse_auth: int = 0
    """Answer the next N auth packets with code -101."""
    popularity: int = 4321
    live: bool = False
    position: int = 0
    offset_ms: int = 0
    """How far the data set's times were shifted."""

    @property
    def expected(self) -> list[Sent]:
        return [s for b in self.broadcasts for s in b.sent]


def read_day_files(paths: list[Path]) -> tuple[list[LiveDanmaku], dict[int, str]]:
    """The danmaku of some day files (in time order) and the user names of their SPEAKERNUM lines."""
    items: list[LiveDanmaku] = []
    names: dict[int, str] = {}
    for path in paths:
        data = path.read_bytes()
        for line in data.split(b"\n"):
            if line.startswith(b"SPEAKERNUM") and b";" in line:
                for entry in line.split(b";", 1)[1].decode("utf-8", "replace").split(","):
                    uid, _, rest = entry.partition(":")
                    if uid.isdigit():
                        names[int(uid)] = rest.rsplit(":", 1)[0]
        items.extend(i for i in parse_live_chat(data) if isinstance(i, LiveDanmaku))
    items.sort(key=lambda d: (d.sent_at_ms, d.line))
    return items, names


def build_room(room_id: int, paths: list[Path], *, seed: int = 0, per_frame: int = 6,
               sc_every: int = 25, drop_after: int | None = None, ends_ago_ms: int = 60_000,
               short_id: int = 0, masked: bool = False, last_open: bool = False, anchor: int = -1,
               offset_ms: int | None = None, garbage: bool = True) -> MockRoom:
    """A room playing these files' broadcasts (see the module docstring).

    ``drop_after``: drop the connection after that many chat frames (once).
    ``last_open``: leave the last broadcast on air (no PREPARING at the end).
    ``anchor``: the danmaku (index in time order) that is sent ``ends_ago_ms`` before now;
    ``offset_ms``: the shift itself (to play the very same messages again later).
    ``garbage``: put a frame that is not the protocol after every ninth chat frame.
    """
    rng = random.Random(seed * 1_000_003 + room_id)
    items, names = read_day_files(paths)
    offset = offset_ms if offset_ms is not None else (
        int(time.time() * 1000) - ends_ago_ms - items[anchor].sent_at_ms)
    room = MockRoom(room_id=room_id, short_id=short_id, offset_ms=offset)
    groups: list[list[LiveDanmaku]] = []
    for item in items:
        if not groups or item.sent_at_ms - groups[-1][-1].sent_at_ms > GAP_MS:
            groups.append([])
        groups[-1].append(item)
    chat_frames = 0
    sc_id = room_id * 1000
    count = 0
    for index, group in enumerate(groups):
        first_ms = group[0].sent_at_ms + offset
        broadcast = Broadcast(live_time_s=first_ms // 1000 - rng.randrange(1, 120),
                              first_frame=len(room.frames))
        room.broadcasts.append(broadcast)
        # The server often says LIVE twice; the second time without live_time.
        room.frames.append(Frame(commands.message(commands.live(room_id, broadcast.live_time_s)), live=True))
        room.frames.append(Frame(commands.message(commands.live(room_id, None)), live=True))
        pending: list[bytes] = []
        chats = 0
        for item in group:
            chats += 1
            count += 1
            uid = int(item.sender)
            uname = names.get(uid, f"用户{uid}")
            sent_ms = item.sent_at_ms + offset
            if count % sc_every == 0:
                sc_id += 1
                pending.append(commands.message(commands.super_chat(sc_id, sent_ms // 1000 * 1000, uid,
                                                                    uname, item.text)))
                broadcast.sent.append(Sent(sent_ms // 1000 * 1000, uid, uname, item.text, True))
            else:
                cmd = "DANMU_MSG:4:0:2:2:2:0" if count % 7 == 0 else "DANMU_MSG"
                pending.append(commands.message(commands.danmu_msg(
                    sent_ms, uid, uname, item.text, rnd=rng.randrange(-2**31, 2**31), cmd=cmd,
                    masked=masked)))
                broadcast.sent.append(Sent(sent_ms, 0 if masked else uid, uname, item.text, False))
            if rng.random() < 0.5:
                pending.append(commands.message(rng.choice(commands.noise(rng, room_id))))
            if count % 11 == 0:
                pending.append(commands.protobuf_body())
            if len(pending) >= per_frame:
                room.frames.append(Frame(commands.bundle(pending, 2 + chat_frames % 2), chats=chats))
                pending, chats = [], 0
                chat_frames += 1
                if chat_frames == drop_after:
                    room.frames.append(Drop())
                if garbage and chat_frames % 9 == 0:
                    room.frames.append(Frame(rng.choice(commands.GARBAGE)))
        if pending:
            room.frames.append(Frame(commands.bundle(pending, 2 + chat_frames % 2), chats=chats))
            chat_frames += 1
        if not (last_open and index == len(groups) - 1):
            room.frames.append(Frame(commands.message(commands.preparing(room_id)), live=False))
    return room
