"""SQLAlchemy models of the danmaku store.

One table per thing a user can point at: a *source* (one video page or one live
broadcast, i.e. one future corpus document), its *danmaku*, and the *runs* that
filled the store (imports and crawls) with what they rejected. Every schema
change is an alembic revision in ``alembic/versions``; nothing here calls
``create_all()``.

Times are stored as integer unix milliseconds (UTC): bulk inserts of millions of
rows stay in C, and SQLite and PostgreSQL order them identically.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VIDEO_PAGE = "video_page"
LIVE_BROADCAST = "live_broadcast"
SOURCE_KINDS = (VIDEO_PAGE, LIVE_BROADCAST)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Source(Base):
    """One corpus document: a video page (aid + page / cid) or a live broadcast.

    ``key`` is the natural identity that importers and the crawler agree on, so
    the same video page reached from the CSV data set and from the crawler is one
    row: ``video:{aid}:{page}`` and ``live:{room_id}:{first_danmaku_ms}``.
    """

    __tablename__ = "source"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    aid: Mapped[int | None] = mapped_column(BigInteger, index=True)
    bvid: Mapped[str | None] = mapped_column(String(16))
    cid: Mapped[int | None] = mapped_column(BigInteger, index=True)
    page: Mapped[int | None] = mapped_column(Integer)
    room_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    uploader_mid: Mapped[int | None] = mapped_column(BigInteger, index=True)
    title: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    started_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    ended_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    origin: Mapped[str] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(16))


class Danmaku(Base):
    """One comment, its text exactly as given.

    ``position_ms`` is the place in the video (None for live chat); ``sender`` is
    what the source gives (live uid, crc32 mid hash of the protobuf API, nothing
    for the CSV data set); ``dmid`` and the display fields come from the crawler.
    """

    __tablename__ = "danmaku"
    __table_args__ = (
        Index("ix_danmaku_export_order", "source_id", "sent_at_ms", "id"),
        Index("uq_danmaku_source_dmid", "source_id", "dmid", unique=True,
              sqlite_where=text("dmid IS NOT NULL"), postgresql_where=text("dmid IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    source_id: Mapped[int] = mapped_column(ForeignKey("source.id", ondelete="CASCADE"))
    position_ms: Mapped[int | None] = mapped_column(Integer)
    sent_at_ms: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    dmid: Mapped[int | None] = mapped_column(BigInteger)
    mode: Mapped[int | None] = mapped_column(SmallInteger)
    color: Mapped[int | None] = mapped_column(Integer)
    font_size: Mapped[int | None] = mapped_column(SmallInteger)
    pool: Mapped[int | None] = mapped_column(SmallInteger)


class Run(Base):
    """One import or crawl: what it read, when, and what it counted."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(Text)
    started_at_ms: Mapped[int] = mapped_column(BigInteger)
    finished_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer, default=0)
    sources: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="running")
    stats_json: Mapped[str | None] = mapped_column(Text)


class ImportedFile(Base):
    """A file whose rows are committed, so a re-run (or a run after kill -9) skips it.

    Written in the same transaction as the file's rows: either both exist or
    neither does.
    """

    __tablename__ = "imported_file"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_imported_file_kind_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha1: Mapped[str] = mapped_column(String(40))
    rows: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))


class Reject(Base):
    """A physical line that could not be parsed, with where it was and why."""

    __tablename__ = "reject"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), index=True)
    file: Mapped[str] = mapped_column(Text)
    line: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(120))
    raw: Mapped[str] = mapped_column(Text)
