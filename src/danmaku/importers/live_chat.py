"""``danmaku import live``: the crowd-recorded live-chat tree -> one source per broadcast.

Layout ``{room_id}/{Y-M-D}.txt``. A broadcast is cut by silence: a danmaku more
than ``gap`` after the previous one starts a new broadcast, across the midnight
files of one room. Files are read in day order, one transaction per file with its
marker; a file's danmaku that continue a broadcast already stored (from the day
before, or an earlier import) extend that source rather than start a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update

from danmaku.importers.parsers import BadLine, LiveDanmaku, live_file_date, parse_live_chat
from danmaku.store.models import LIVE_BROADCAST, Source
from danmaku.store.runs import (
    ImportSummary,
    StrictModeError,
    finish_run,
    imported_files,
    record_file,
    record_rejects,
    sha1_of,
    start_run,
)
from danmaku.store.writes import insert_danmaku, source_key_live, upsert_source

KIND = "live_chat"
DEFAULT_GAP_MINUTES = 30.0
COLUMNS = ("source_id", "sent_at_ms", "sender", "text")


@dataclass
class _Broadcast:
    id: int
    start: int
    end: int


def find_live_files(root: Path) -> Iterator[tuple[str, int, Path]]:
    """(name, room_id, path) of every ``{room}/{Y-M-D}.txt`` below root, rooms and days in order.

    ``root`` may be the tree or a single room's folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    rooms = [root] if root.name.isdigit() and any(
        live_file_date(p.name) for p in root.iterdir()) else sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for room in rooms:
        days = sorted((live_file_date(p.name), p) for p in room.iterdir() if live_file_date(p.name))
        for _, path in days:
            yield f"{room.name}/{path.name}", int(room.name), path


def import_live_chat(
    engine: Engine,
    root: Path,
    *,
    gap_minutes: float = DEFAULT_GAP_MINUTES,
    strict: bool = False,
    on_file: Callable[[str, int], None] | None = None,
    on_bad: Callable[[str, BadLine], None] | None = None,
) -> ImportSummary:
    """Import every live-chat file below ``root``; safe to re-run and to kill."""
    started = time.perf_counter()
    gap_ms = int(gap_minutes * 60_000)
    summary = ImportSummary(kind=KIND, target=str(root))
    files = list(find_live_files(root))
    done = imported_files(engine, KIND)
    run_id = start_run(engine, KIND, str(root))
    status = "failed"
    try:
        for name, room_id, path in files:
            summary.files_seen += 1
            data = path.read_bytes()
            sha1 = sha1_of(data)
            if name in done:
                if done[name] == sha1:
                    summary.files_skipped += 1
                else:
                    summary.files_changed += 1
                    summary.problems.append(f"{name}: changed since it was imported; not re-imported")
                if on_file:
                    on_file(name, 0)
                continue
            danmaku: list[LiveDanmaku] = []
            bad: list[BadLine] = []
            for item in parse_live_chat(data):
                if isinstance(item, LiveDanmaku):
                    danmaku.append(item)
                elif strict:
                    raise StrictModeError(f"{name}:{item.line}: {item.reason}")
                else:
                    bad.append(item)
                    if on_bad:
                        on_bad(name, item)
            with engine.begin() as conn:
                created = _store_file(conn, room_id, name, danmaku, gap_ms)
                record_rejects(conn, run_id, name, bad)
                record_file(conn, kind=KIND, name=name, size=len(data), sha1=sha1,
                            rows=len(danmaku), rejected=len(bad), run_id=run_id)
            summary.files_imported += 1
            summary.sources_created += created
            summary.rows += len(danmaku)
            summary.rejected += len(bad)
            if on_file:
                on_file(name, len(danmaku))
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        finish_run(engine, run_id, summary, status)
    return summary


def split_broadcasts(times_ms: list[int], gap_ms: int) -> list[tuple[int, int]]:
    """Index ranges [start, end) of ``times_ms`` (sorted) separated by silences > gap."""
    ranges: list[tuple[int, int]] = []
    begin = 0
    for i in range(1, len(times_ms)):
        if times_ms[i] - times_ms[i - 1] > gap_ms:
            ranges.append((begin, i))
            begin = i
    if times_ms:
        ranges.append((begin, len(times_ms)))
    return ranges


def _store_file(conn: Connection, room_id: int, name: str, danmaku: list[LiveDanmaku],
                gap_ms: int) -> int:
    """Assign one file's danmaku to broadcasts (stored or new); returns sources created."""
    ordered = sorted(danmaku, key=lambda d: (d.sent_at_ms, d.line))
    created = 0
    for begin, end in split_broadcasts([d.sent_at_ms for d in ordered], gap_ms):
        part = ordered[begin:end]
        first, last = part[0].sent_at_ms, part[-1].sent_at_ms
        broadcast = _stored_broadcast(conn, room_id, first, last, gap_ms)
        if broadcast is None:
            source_id, is_new = upsert_source(
                conn, source_key_live(room_id, first), LIVE_BROADCAST, f"live:{name}",
                {"room_id": room_id, "started_at_ms": first, "ended_at_ms": last},
            )
            created += int(is_new)
        else:
            source_id = broadcast.id
            conn.execute(update(Source).where(Source.id == source_id).values(
                started_at_ms=min(broadcast.start, first), ended_at_ms=max(broadcast.end, last)))
        insert_danmaku(conn, COLUMNS, [(source_id, d.sent_at_ms, d.sender, d.text) for d in part])
    return created


def _stored_broadcast(conn: Connection, room_id: int, first: int, last: int,
                      gap_ms: int) -> _Broadcast | None:
    """The stored broadcast of this room that [first, last] continues, if any."""
    row = conn.execute(
        select(Source.id, Source.started_at_ms, Source.ended_at_ms)
        .where(Source.kind == LIVE_BROADCAST, Source.room_id == room_id,
               Source.ended_at_ms >= first - gap_ms, Source.started_at_ms <= last + gap_ms)
        .order_by(Source.started_at_ms).limit(1)
    ).first()
    return _Broadcast(*row) if row else None
