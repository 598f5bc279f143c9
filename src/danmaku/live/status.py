"""``danmaku live status``: rooms, broadcasts and counts, read from the store.

Covers every live-broadcast source, recorded (``origin = live-record``) or
imported from the text tree, so a room's whole history shows in one line.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case, func, select

from danmaku.live.recorder import KIND
from danmaku.live.storage import ORIGIN
from danmaku.store.models import LIVE_BROADCAST, Danmaku, Run, Source
from danmaku.store.writes import LIVE_ON_AIR, LIVE_OPEN_STATUSES, LIVE_SUPER_CHAT_POOL


def live_status(engine: Engine, *, top: int = 100) -> dict[str, Any]:
    """Per room (most danmaku first, at most ``top``): broadcasts, open ones, danmaku, super chats."""
    recorded = case((Source.origin == ORIGIN, 1), else_=0)
    is_open = case((Source.status.in_(LIVE_OPEN_STATUSES), 1), else_=0)
    on_air_since = func.max(case((Source.status == LIVE_ON_AIR, Source.started_at_ms), else_=None))
    with engine.connect() as conn:
        sources = conn.execute(
            select(Source.room_id, func.count(Source.id), func.sum(recorded), func.sum(is_open),
                   on_air_since)
            .where(Source.kind == LIVE_BROADCAST).group_by(Source.room_id)
        ).all()
        counts = conn.execute(
            select(Source.room_id, func.count(Danmaku.id),
                   func.sum(case((Danmaku.pool == LIVE_SUPER_CHAT_POOL, 1), else_=0)),
                   func.min(Danmaku.sent_at_ms), func.max(Danmaku.sent_at_ms))
            .select_from(Source).join(Danmaku, Danmaku.source_id == Source.id)
            .where(Source.kind == LIVE_BROADCAST).group_by(Source.room_id)
        ).all()
        runs = conn.execute(
            select(Run.id, Run.status, Run.target, Run.started_at_ms, Run.finished_at_ms, Run.rows)
            .where(Run.kind == KIND).order_by(Run.id.desc()).limit(5)
        ).all()
    by_room = {room: {"danmaku": int(n), "super_chats": int(sc or 0), "first_ms": first, "last_ms": last}
               for room, n, sc, first, last in counts}
    rooms = []
    for room, broadcasts, rec, open_, since in sources:
        figures = by_room.get(room, {"danmaku": 0, "super_chats": 0, "first_ms": None, "last_ms": None})
        rooms.append({"room_id": int(room) if room is not None else None, "broadcasts": int(broadcasts),
                      "recorded": int(rec or 0), "open": int(open_ or 0),
                      "on_air_since_ms": int(since) if since is not None else None, **figures})
    rooms.sort(key=lambda r: (-r["danmaku"], r["room_id"] or 0))
    return {
        "rooms": rooms[:top],
        "total_rooms": len(rooms),
        "broadcasts": sum(r["broadcasts"] for r in rooms),
        "danmaku": sum(r["danmaku"] for r in rooms),
        "super_chats": sum(r["super_chats"] for r in rooms),
        "runs": [{"id": i, "status": st, "rooms": target, "started_at_ms": s, "finished_at_ms": f,
                  "rows": int(r or 0)} for i, st, target, s, f, r in runs],
    }
