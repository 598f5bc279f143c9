"""Every write to the store: sources, danmaku, runs, file markers and rejects.

Importers, the crawler and the live recorder all go through these functions,
so a video page reached from the CSV data set and from the crawler ends up as
one source, a danmaku that is already there (same source and dmid) is never
added twice, and the rules on what the store holds are written once:

* NUL becomes U+FFFD (``nul_free``): PostgreSQL cannot store NUL in text, both
  backends must hold the same texts, and Google's tokenizer deletes both alike;
* no danmaku longer than ``max_danmaku_chars()`` characters (default
  1,000,000; ``DANMAKU_MAX_DANMAKU_CHARS`` changes it): a 50 MB "danmaku"
  would become one corpus line that pretraining chokes on (118 s, 10.6 GB
  peak for one 17 M-character line). Measured on the shared sample, real ones
  are not all short: advanced (BAS code) danmaku reach 18,756, 31,974 and
  292,684 characters, so a 10,000 cap would drop real data. Writers reject
  and count longer ones (``too_long``) before they get here;
* a run row per import or crawl, with the process that runs it, so a run whose
  process was killed is marked ``interrupted`` by the next one instead of
  staying ``running`` for ever.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from danmaku.processes import pid_alive
from danmaku.store.models import LIVE_BROADCAST, VIDEO_PAGE, Danmaku, ImportedFile, Reject, Run, Source

DEFAULT_MAX_DANMAKU_CHARS = 1_000_000
MAX_CHARS_ENV = "DANMAKU_MAX_DANMAKU_CHARS"
REJECT_RAW_LIMIT = 500
REJECT_REASON_LIMIT = 120


# -- what the store holds ----------------------------------------------------------------


def max_danmaku_chars() -> int:
    """The longest danmaku the store takes (``DANMAKU_MAX_DANMAKU_CHARS``, default 1,000,000)."""
    raw = os.environ.get(MAX_CHARS_ENV)
    if not raw:
        return DEFAULT_MAX_DANMAKU_CHARS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_CHARS_ENV} must be a whole number of characters, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{MAX_CHARS_ENV} must be positive, got {value}")
    return value


def too_long(text: str, limit: int) -> str | None:
    """The reject reason when ``text`` is over the cap, else None."""
    return f"danmaku longer than {limit:,} characters" if len(text) > limit else None


def nul_free(text: str) -> str:
    """The text as the store holds it: NUL becomes U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def nul_free_bytes(data: bytes) -> bytes:
    """``nul_free`` on UTF-8 bytes (parsers work on whole files of bytes)."""
    return data.replace(b"\x00", "\ufffd".encode()) if b"\x00" in data else data


def _dialect_insert(conn: Connection, table):
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database: {conn.dialect.name}")


def now_ms() -> int:
    return int(time.time() * 1000)


# -- runs, file markers, rejects ------------------------------------------------------------


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}



def mark_stale_runs(conn: Connection) -> int:
    """Mark ``interrupted`` the running runs of this host whose process is gone; returns how many.

    A run started on another host cannot be checked from here and is left alone.
    """
    host = socket.gethostname()
    stale = []
    for run_id, stats in conn.execute(select(Run.id, Run.stats_json).where(Run.status == "running")):
        try:
            owner = json.loads(stats or "{}").get("owner") or {}
        except (ValueError, AttributeError):
            continue
        if owner.get("host") == host and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"]):
            stale.append(run_id)
    if stale:
        conn.execute(update(Run).where(Run.id.in_(stale)).values(status="interrupted"))
    return len(stale)


def start_run(engine: Engine, kind: str, target: str) -> int:
    """A new run row (status ``running``, owned by this process); stale runs are closed first."""
    with engine.begin() as conn:
        mark_stale_runs(conn)
        return conn.execute(
            insert(Run).values(
                kind=kind, target=target, started_at_ms=now_ms(), files=0, sources=0,
                rows=0, rejected=0, skipped=0, status="running",
                stats_json=json.dumps({"owner": _owner()}),
            ).returning(Run.id)
        ).scalar_one()


def update_run(conn: Connection, run_id: int, *, status: str, files: int, sources: int, rows: int,
               rejected: int, skipped: int, stats: Mapping[str, Any], finished: bool = False) -> None:
    """The run's counts as they stand (``finished`` also stamps its end)."""
    values: dict[str, Any] = {
        "files": files, "sources": sources, "rows": rows, "rejected": rejected, "skipped": skipped,
        "status": status,
        "stats_json": json.dumps({**stats, "owner": _owner()} if status == "running" else dict(stats),
                                 ensure_ascii=False),
    }
    if finished:
        values["finished_at_ms"] = now_ms()
    conn.execute(update(Run).where(Run.id == run_id).values(values))


def imported_files(engine: Engine | Connection, kind: str) -> dict[str, str]:
    """name -> sha1 of every file of this kind whose rows are committed."""
    query = select(ImportedFile.name, ImportedFile.sha1).where(ImportedFile.kind == kind)
    if isinstance(engine, Connection):
        return dict(engine.execute(query).all())
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


def record_files(conn: Connection, markers: list[dict]) -> None:
    """Mark files as committed (in the transaction that holds their rows)."""
    if markers:
        conn.execute(insert(ImportedFile), markers)


class RejectedLine(Protocol):
    line: int
    reason: str
    raw: bytes


def record_rejects(conn: Connection, run_id: int, file: str, bad: Sequence[RejectedLine]) -> None:
    """Rejected lines of one file, with line, reason and raw bytes (line 0: the whole file)."""
    if bad:
        conn.execute(insert(Reject), [
            {"run_id": run_id, "file": file, "line": b.line, "reason": b.reason[:REJECT_REASON_LIMIT],
             "raw": b.raw[:REJECT_RAW_LIMIT].decode("utf-8", "replace")}
            for b in bad
        ])


# -- sources -------------------------------------------------------------------------------

SOURCE_FILLABLE = (
    "aid", "bvid", "cid", "page", "room_id", "uploader_mid", "title", "duration_s",
    "started_at_ms", "ended_at_ms", "status",
)


def source_key_video(aid: int, page: int) -> str:
    return f"video:{aid}:{page}"


def source_key_live(room_id: int, first_ms: int) -> str:
    return f"live:{room_id}:{first_ms}"


def mark_pages_gone(conn: Connection, aid: int, cid: int | None = None) -> None:
    """A deleted or hidden video (or one page of it): its sources get ``status = 'gone'``."""
    condition = [Source.aid == aid, Source.kind == VIDEO_PAGE, Source.status.is_(None)]
    if cid is not None:
        condition.append(Source.cid == cid)
    conn.execute(update(Source).where(*condition).values(status="gone"))


def continued_broadcast(conn: Connection, room_id: int, first_ms: int, last_ms: int,
                        gap_ms: int) -> tuple[int, int, int] | None:
    """(id, started, ended) of the stored broadcast of this room that [first, last] continues."""
    row = conn.execute(
        select(Source.id, Source.started_at_ms, Source.ended_at_ms)
        .where(Source.kind == LIVE_BROADCAST, Source.room_id == room_id,
               Source.ended_at_ms >= first_ms - gap_ms, Source.started_at_ms <= last_ms + gap_ms)
        .order_by(Source.started_at_ms).limit(1)
    ).first()
    return (row[0], row[1], row[2]) if row else None


def upsert_source(conn: Connection, key: str, kind: str, origin: str,
                  values: Mapping[str, Any] | None = None) -> tuple[int, bool]:
    """Id of the source with this key, created if new; returns (id, created).

    On an existing source, fields that are still NULL are filled from ``values``
    (the crawler adding cid/bvid/title to a page the CSV import created); fields
    already set are kept, so the first writer's facts are never overwritten.
    """
    values = _given_fields(values)
    stmt = _dialect_insert(conn, Source).values(key=key, kind=kind, origin=origin, **values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(Source.id)
    new_id = conn.execute(stmt).scalar()
    if new_id is not None:
        return new_id, True
    source_id = conn.execute(select(Source.id).where(Source.key == key)).scalar_one()
    _fill_nulls(conn, source_id, values)
    return source_id, False


def _given_fields(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The non-None source fields of ``values``; unknown names are an error."""
    given = {k: v for k, v in (values or {}).items() if v is not None}
    unknown = set(given) - set(SOURCE_FILLABLE)
    if unknown:
        raise ValueError(f"not source fields: {sorted(unknown)}")
    return given


def _fill_nulls(conn: Connection, source_id: int, values: Mapping[str, Any]) -> None:
    """Set the source's still-NULL fields from ``values``; fields already set are kept."""
    if values:
        conn.execute(update(Source).where(Source.id == source_id).values(
            {getattr(Source, k): func.coalesce(getattr(Source, k), v) for k, v in values.items()}))


def upsert_sources(conn: Connection, kind: str,
                   items: Sequence[tuple[str, str, Mapping[str, Any]]]) -> dict[str, tuple[int, bool]]:
    """``upsert_source`` for many (key, origin, values) at once: key -> (id, created).

    Three statements per batch instead of two or three per source: an import of
    thousands of small files spends its time on rows, not on round trips.
    """
    items = [(key, origin, _given_fields(values)) for key, origin, values in items]
    keys = [key for key, _, _ in items]
    existing = _ids_of(conn, keys)
    new = [{"key": key, "kind": kind, "origin": origin,
            **{c: values.get(c) for c in SOURCE_FILLABLE}}
           for key, origin, values in items if key not in existing]
    if new:
        conn.execute(_dialect_insert(conn, Source).on_conflict_do_nothing(index_elements=["key"]), new)
    created = _ids_of(conn, [row["key"] for row in new])
    for key, _, values in items:
        if key in existing:
            _fill_nulls(conn, existing[key], values)
    return {key: (existing[key], False) if key in existing else (created[key], True) for key in keys}


def _ids_of(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        query = select(Source.key, Source.id).where(Source.key.in_(keys[start:start + 500]))
        ids.update((key, source_id) for key, source_id in conn.execute(query))
    return ids


def insert_danmaku(conn: Connection, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Bulk insert of positional rows (one executemany at the driver level).

    Tuples, not dicts: building a dict per row and binding by name costs more
    than parsing the row did, and imports move millions of rows.
    """
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO danmaku ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(sql, list(rows) if not isinstance(rows, list) else rows)


def insert_danmaku_ignoring_known(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Bulk insert of rows with dmids; rows whose (source, dmid) is stored are skipped.

    Returns how many rows are new, counted with RETURNING: an executemany's
    rowcount is not reliable on PostgreSQL (psycopg reports 0 for it).
    """
    if not rows:
        return 0
    stmt = _dialect_insert(conn, Danmaku).on_conflict_do_nothing(
        index_elements=["source_id", "dmid"], index_where=Danmaku.dmid.isnot(None)
    ).returning(Danmaku.id)
    return len(conn.execute(stmt, rows).all())


CRAWLED_FIELDS = ("dmid", "position_ms", "sent_at_ms", "sender", "text", "mode", "color",
                  "font_size", "pool")
_IN_CHUNK = 500


def drop_already_crawled(conn: Connection, source_id: int,
                         rows: Sequence[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """CSV rows (text, position_ms, sent_at_ms) minus those the crawler already stored.

    The CSV data set has no dmids, so a comment is the same comment when text,
    position and sent-at time agree; equal rows pair off one to one. Only a
    source that holds crawled (dmid) rows costs a query.
    """
    has_crawled = conn.execute(
        select(Danmaku.id).where(Danmaku.source_id == source_id, Danmaku.dmid.isnot(None)).limit(1)
    ).first()
    if not has_crawled:
        return list(rows)
    stored = collections.Counter(conn.execute(
        select(Danmaku.text, Danmaku.position_ms, Danmaku.sent_at_ms)
        .where(Danmaku.source_id == source_id)).all())
    kept = []
    for row in rows:
        if stored[row] > 0:
            stored[row] -= 1
        else:
            kept.append(row)
    return kept


def has_unkeyed_danmaku(conn: Connection, source_id: int) -> bool:
    """Whether the source holds danmaku without dmid (from the CSV data set)."""
    return conn.execute(
        select(Danmaku.id).where(Danmaku.source_id == source_id, Danmaku.dmid.is_(None)).limit(1)
    ).first() is not None


def add_crawled_danmaku(conn: Connection, source_id: int, rows: Sequence[Sequence[Any]], *,
                        match_unkeyed: bool = True) -> tuple[int, int, int]:
    """Store crawled danmaku (tuples in ``CRAWLED_FIELDS`` order); returns (new, filled, known).

    A danmaku whose (source, dmid) is stored is *known* and skipped. With
    ``match_unkeyed``, one that equals a stored danmaku without dmid on (text,
    position_ms, sent_at_ms) -- the same comment imported from the CSV data set
    -- *fills* that row's dmid, sender and display fields instead of becoming a
    second copy; equal rows pair off one to one. The rest is inserted as *new*.
    """
    by_dmid: dict[int, Sequence[Any]] = {}
    for row in rows:
        by_dmid.setdefault(row[0], row)
    candidates = list(by_dmid.values())
    filled = 0
    if match_unkeyed and candidates:
        stored: set[int] = set()
        dmids = list(by_dmid)
        for start in range(0, len(dmids), _IN_CHUNK):
            stored.update(conn.execute(select(Danmaku.dmid).where(
                Danmaku.source_id == source_id, Danmaku.dmid.in_(dmids[start:start + _IN_CHUNK])
            )).scalars())
        candidates = [row for row in candidates if row[0] not in stored]
        filled_rows, candidates = _pair_with_unkeyed(conn, source_id, candidates)
        if filled_rows:
            conn.execute(
                update(Danmaku)
                .where(Danmaku.id == bindparam("row_id"), Danmaku.dmid.is_(None))
                .values(dmid=bindparam("new_dmid"),
                        sender=func.coalesce(Danmaku.sender, bindparam("new_sender")),
                        mode=bindparam("new_mode"), color=bindparam("new_color"),
                        font_size=bindparam("new_font_size"), pool=bindparam("new_pool")),
                filled_rows,
            )
            filled = len(filled_rows)
    new = insert_danmaku_ignoring_known(conn, [
        dict(zip(CRAWLED_FIELDS, row, strict=True), source_id=source_id) for row in candidates])
    return new, filled, len(rows) - new - filled


def _pair_with_unkeyed(conn: Connection, source_id: int, rows: list[Sequence[Any]]
                       ) -> tuple[list[dict[str, Any]], list[Sequence[Any]]]:
    """(update parameters for rows equal to an unkeyed stored one, the other rows)."""
    if not rows:
        return [], rows
    first = min(row[2] for row in rows)
    last = max(row[2] for row in rows)
    waiting: dict[tuple[str, int | None, int], list[int]] = {}
    for row_id, text, position, sent in conn.execute(
        select(Danmaku.id, Danmaku.text, Danmaku.position_ms, Danmaku.sent_at_ms)
        .where(Danmaku.source_id == source_id, Danmaku.dmid.is_(None),
               Danmaku.sent_at_ms.between(first, last))
        .order_by(Danmaku.id)
    ):
        waiting.setdefault((text, position, sent), []).append(row_id)
    if not waiting:
        return [], rows
    updates: list[dict[str, Any]] = []
    rest: list[Sequence[Any]] = []
    for row in rows:
        ids = waiting.get((row[4], row[1], row[2]))
        if ids:
            dmid, _, _, sender, _, mode, color, font_size, pool = row
            updates.append({"row_id": ids.pop(0), "new_dmid": dmid, "new_sender": sender,
                            "new_mode": mode, "new_color": color, "new_font_size": font_size,
                            "new_pool": pool})
        else:
            rest.append(row)
    return updates, rest


# -- live recorder (danmaku.live) ---------------------------------------------------------------
# A recorded broadcast is a LIVE_BROADCAST source like an imported one (key
# ``live:{room_id}:{started_ms}``); its ``status`` says whether the recorder still
# writes to it. Its danmaku carry the recorder's message identity in ``dmid``
# (``danmaku.live.messages.chat_identity``), so the (source, dmid) unique index
# makes every write idempotent: a reconnect or a restart never stores a message twice.

LIVE_ON_AIR = "on_air"
"""Open: the room is broadcasting."""
LIVE_CHAT = "chat"
"""Open: chat while the room is not broadcasting (cut by silence, as the importer cuts)."""
LIVE_ENDED = "ended"
"""Closed by PREPARING, by a long silence, or found stale when the recorder started."""
LIVE_OPEN_STATUSES = (LIVE_ON_AIR, LIVE_CHAT)
LIVE_DANMAKU_POOL = 0
LIVE_SUPER_CHAT_POOL = 3
"""``pool`` of a super chat (the video pools are 0 normal, 1 subtitle, 2 special)."""
LIVE_FIELDS = ("dmid", "sent_at_ms", "sender", "text", "mode", "color", "font_size", "pool")


def open_live_broadcast(conn: Connection, room_id: int, started_ms: int, status: str,
                        origin: str) -> int:
    """Id of the recorded broadcast of this room starting at ``started_ms`` (created if new).

    Opening a source that exists (the recorder restarted on the same ``LIVE``)
    writes to it again with the given status.
    """
    source_id, created = upsert_source(
        conn, source_key_live(room_id, started_ms), LIVE_BROADCAST, origin,
        {"room_id": room_id, "started_at_ms": started_ms, "ended_at_ms": started_ms, "status": status})
    if not created:
        set_live_status(conn, source_id, status)
    return source_id


def set_live_status(conn: Connection, source_id: int, status: str) -> None:
    conn.execute(update(Source).where(Source.id == source_id).values(status=status))


def add_live_danmaku(conn: Connection, source_id: int, rows: Sequence[Sequence[Any]]) -> list[int]:
    """Store live danmaku (tuples in ``LIVE_FIELDS`` order); returns the dmids that were new.

    Rows whose (source, dmid) is stored are skipped. The source's time range
    grows to cover the new rows, so ``ended_at_ms`` is the last danmaku even
    when the recorder is killed before the broadcast closes.
    """
    if not rows:
        return []
    stmt = _dialect_insert(conn, Danmaku).on_conflict_do_nothing(
        index_elements=["source_id", "dmid"], index_where=Danmaku.dmid.isnot(None)
    ).returning(Danmaku.dmid)
    new = list(conn.execute(stmt, [dict(zip(LIVE_FIELDS, row, strict=True), source_id=source_id)
                                   for row in rows]).scalars())
    if new:
        times = [row[1] for row in rows]
        widen_broadcast(conn, source_id, min(times), max(times))
    return new


def close_live_broadcast(conn: Connection, source_id: int, ended_ms: int) -> None:
    """Mark a recorded broadcast ended at ``ended_ms`` (never before its last danmaku)."""
    conn.execute(update(Source).where(Source.id == source_id).values(status=LIVE_ENDED))
    widen_broadcast(conn, source_id, None, ended_ms)


def close_stale_live_broadcasts(conn: Connection, room_id: int, before_ms: int) -> int:
    """End this room's open broadcasts last written before ``before_ms`` (a recorder that died)."""
    result = conn.execute(update(Source).where(
        Source.kind == LIVE_BROADCAST, Source.room_id == room_id,
        Source.status.in_(LIVE_OPEN_STATUSES), Source.ended_at_ms < before_ms,
    ).values(status=LIVE_ENDED))
    return result.rowcount or 0


def widen_broadcast(conn: Connection, source_id: int, first: int | None, last: int | None) -> None:
    """Widen a broadcast's time span to cover [first, last] (NULL ends are filled)."""
    values = {}
    if first is not None:
        values["started_at_ms"] = case(
            (Source.started_at_ms.is_(None) | (Source.started_at_ms > first), first),
            else_=Source.started_at_ms)
    if last is not None:
        values["ended_at_ms"] = case(
            (Source.ended_at_ms.is_(None) | (Source.ended_at_ms < last), last),
            else_=Source.ended_at_ms)
    if values:
        conn.execute(update(Source).where(Source.id == source_id).values(values))
