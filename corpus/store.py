"""Writes to the store that importers and the crawler share.

Every writer goes through these two functions, so a video page reached from the
CSV data set and from the crawler ends up as one source, and a danmaku that is
already there (same source and dmid) is never added twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from corpus.models import Danmaku, Source

SOURCE_FILLABLE = (
    "aid", "bvid", "cid", "page", "room_id", "uploader_mid", "title", "duration_s",
    "started_at_ms", "ended_at_ms", "status",
)


def _dialect_insert(conn: Connection, table):
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database: {conn.dialect.name}")


def source_key_video(aid: int, page: int) -> str:
    return f"video:{aid}:{page}"


def source_key_live(room_id: int, first_ms: int) -> str:
    return f"live:{room_id}:{first_ms}"


def upsert_source(conn: Connection, key: str, kind: str, origin: str,
                  values: Mapping[str, Any] | None = None) -> tuple[int, bool]:
    """Id of the source with this key, created if new; returns (id, created).

    On an existing source, fields that are still NULL are filled from ``values``
    (the crawler adding cid/bvid/title to a page the CSV import created); fields
    already set are kept, so the first writer's facts are never overwritten.
    """
    values = {k: v for k, v in (values or {}).items() if v is not None}
    unknown = set(values) - set(SOURCE_FILLABLE)
    if unknown:
        raise ValueError(f"not source fields: {sorted(unknown)}")
    stmt = _dialect_insert(conn, Source).values(key=key, kind=kind, origin=origin, **values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(Source.id)
    new_id = conn.execute(stmt).scalar()
    if new_id is not None:
        return new_id, True
    source_id = conn.execute(select(Source.id).where(Source.key == key)).scalar_one()
    if values:
        conn.execute(
            update(Source).where(Source.id == source_id).values(
                {getattr(Source, k): func.coalesce(getattr(Source, k), v) for k, v in values.items()}
            )
        )
    return source_id, False


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

    Returns how many rows are new.
    """
    if not rows:
        return 0
    stmt = _dialect_insert(conn, Danmaku).on_conflict_do_nothing(
        index_elements=["source_id", "dmid"], index_where=Danmaku.dmid.isnot(None)
    )
    result = conn.execute(stmt, rows)
    return max(result.rowcount, 0)
