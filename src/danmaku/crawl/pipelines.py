"""The store pipeline: crawled pages and danmaku into the same store as ``danmaku import``.

Writes go through ``danmaku.store.writes`` -- no second schema, no second idea of identity:

- a ``PageItem`` becomes (or fills the empty fields of) the source
  ``video:{aid}:{page}``, so a page the CSV import created gets its cid, bvid and
  title and is never duplicated; written at once, in its own transaction;
- ``DanmakuItem`` rows are buffered and written in batches of ``DANMAKU_BATCH_ROWS``
  (default 20000) or every ``DANMAKU_FLUSH_SECONDS`` (10) with
  ``add_crawled_danmaku``: a known dmid is skipped, a row equal to a CSV-imported
  one without dmid fills it, the rest is inserted. Re-running adds nothing twice;
- ``ProblemItem``\\ s are counted (gone pages also get ``status = 'gone'``).

Each crawl is a ``run`` row (kind ``crawl``), updated with every batch (so
``danmaku crawl status`` can watch a running crawl) and closed with the finish reason.
The store is ``DANMAKU_DATABASE_URL`` (setting or environment), else ``./danmaku.sqlite``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass, field

from scrapy import signals
from scrapy.crawler import Crawler
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from danmaku.crawl.danmaku import Row
from danmaku.crawl.items import CLOSED, FAILED, FALLBACK, GONE, DanmakuItem, PageItem, ProblemItem
from danmaku.store.db import make_engine, redact, resolve_url
from danmaku.store.models import VIDEO_PAGE, Source
from danmaku.store.writes import (
    add_crawled_danmaku,
    has_unkeyed_danmaku,
    mark_pages_gone,
    max_danmaku_chars,
    nul_free,
    source_key_video,
    start_run,
    too_long,
    update_run,
    upsert_source,
)

logger = logging.getLogger(__name__)

RUN_KIND = "crawl"
ORIGIN = "crawl:bilibili"
PROBLEMS_KEPT = 200
SOURCE_CACHE = 4096
PROGRESS_LOG_S = 60.0
FLUSH_ATTEMPTS = 3


def storable(row: Row) -> Row:
    """The row as the store holds it (``danmaku.store.writes.nul_free``)."""
    text = nul_free(row[4])
    return row if text is row[4] else (*row[:4], text, *row[5:])


@dataclass
class CrawlSummary:
    """What one crawl did; stored as the run's ``stats_json`` and shown by ``danmaku crawl status``."""

    target: str
    videos: int = 0
    pages: int = 0
    pages_new: int = 0
    pages_merged: int = 0
    segments: int = 0
    xml_lists: int = 0
    history_days: int = 0
    danmaku_new: int = 0
    danmaku_filled: int = 0
    danmaku_known: int = 0
    gone: int = 0
    closed: int = 0
    fallbacks: int = 0
    failed: int = 0
    rejected_long: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_stats(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.videos} videos, {self.pages} pages, {self.segments} segments, "
                f"{self.xml_lists} XML lists; danmaku {self.danmaku_new} new, "
                f"{self.danmaku_filled} filled into CSV rows, {self.danmaku_known} known; "
                f"gone {self.gone}, closed {self.closed}, fallbacks {self.fallbacks}, "
                f"failed {self.failed}, too long {self.rejected_long}")


STATUS_BY_REASON = {"finished": "done", "shutdown": "interrupted"}


class StorePipeline:
    """Batched, idempotent writes of crawl items into the danmaku store."""

    def __init__(self, crawler: Crawler, db_url: str, batch_rows: int,
                 flush_seconds: float) -> None:
        self.crawler = crawler
        self.db_url = db_url
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.engine: Engine | None = None
        self.run_id: int | None = None
        self.summary = CrawlSummary(target="")
        self._buffer: dict[int, list[Row]] = defaultdict(list)
        self._buffered = 0
        self._pending = CrawlSummary(target="")  # counts that land with the next batch
        self._source_ids: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._unkeyed: dict[int, bool] = {}
        self._failed_flushes = 0
        self._started = time.monotonic()
        self.max_chars = max_danmaku_chars()
        self._last_flush = self._last_log = time.monotonic()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        settings = crawler.settings
        pipeline = cls(
            crawler,
            resolve_url(settings.get("DANMAKU_DATABASE_URL")),
            settings.getint("DANMAKU_BATCH_ROWS", 20_000),
            settings.getfloat("DANMAKU_FLUSH_SECONDS", 10.0),
        )
        crawler.signals.connect(pipeline.spider_closed, signal=signals.spider_closed)
        return pipeline

    # -- Scrapy hooks ----------------------------------------------------------------------

    def open_spider(self) -> None:
        spider = self.crawler.spider
        targets = getattr(spider, "targets", None)
        self.summary.target = targets.describe() if targets is not None else spider.name
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        self.engine = make_engine(self.db_url)
        self.run_id = start_run(self.engine, RUN_KIND, self.summary.target)
        logger.info("storing into %s (run %d)", redact(self.db_url), self.run_id)

    def process_item(self, item: object) -> object:
        if isinstance(item, DanmakuItem):
            self._add_danmaku(item)
        elif isinstance(item, PageItem):
            self._store_page(item)
        elif isinstance(item, ProblemItem):
            self._record_problem(item)
        return item

    def close_spider(self) -> None:
        self._failed_flushes = max(self._failed_flushes, FLUSH_ATTEMPTS - 1)  # last chance
        self.flush()

    def spider_closed(self, reason: str) -> None:
        status = STATUS_BY_REASON.get(reason, reason[:16])
        self._write_run(status=status, finished=True)
        logger.info("crawl run %s %s: %s", self.run_id, status, self.summary.line())
        if self.engine is not None:
            self.engine.dispose()

    # -- items -----------------------------------------------------------------------------

    def _store_page(self, item: PageItem) -> None:
        values = {"aid": item.aid, "bvid": item.bvid, "cid": item.cid, "page": item.page,
                  "title": item.title, "uploader_mid": item.uploader_mid,
                  "duration_s": item.duration_s, "started_at_ms": item.published_at_ms}
        with self.engine.begin() as conn:
            source_id, created = upsert_source(conn, source_key_video(item.aid, item.page),
                                               VIDEO_PAGE, ORIGIN, values)
        self._remember_source((item.aid, item.page), source_id)
        self.summary.pages += 1
        self.summary.videos += int(item.first_of_video)
        self.summary.pages_new += int(created)
        self.summary.pages_merged += int(not created)
        self.crawler.stats.inc_value("danmaku/pages")

    def _add_danmaku(self, item: DanmakuItem) -> None:
        source_id = self._source_id(item)
        rows = [storable(row) for row in item.rows if len(row[4]) <= self.max_chars]
        if len(rows) < len(item.rows):
            self._reject_long(item, len(item.rows) - len(rows))
        self._buffer[source_id].extend(rows)
        self._buffered += len(rows)
        if item.via == "segment":
            self._pending.segments += 1
        elif item.via == "xml":
            self._pending.xml_lists += 1
        else:
            self._pending.history_days += 1
        now = time.monotonic()
        if self._buffered >= self.batch_rows or now - self._last_flush >= self.flush_seconds:
            self.flush()

    def _reject_long(self, item: DanmakuItem, count: int) -> None:
        reason = too_long("x" * (self.max_chars + 1), self.max_chars)
        self.summary.rejected_long += count
        if len(self.summary.problems) < PROBLEMS_KEPT:
            self.summary.problems.append(f"rejected: av{item.aid} p{item.page}: {count} {reason}")
        logger.warning("av%s p%s: %d %s, not stored", item.aid, item.page, count, reason)

    def _record_problem(self, item: ProblemItem) -> None:
        counter = {GONE: "gone", CLOSED: "closed", FALLBACK: "fallbacks", FAILED: "failed"}
        name = counter.get(item.kind, "failed")
        setattr(self.summary, name, getattr(self.summary, name) + 1)
        self.crawler.stats.inc_value(f"danmaku/problems/{item.kind}")
        where = f"av{item.aid}" + (f" p{item.page}" if item.page else "") if item.aid else item.url
        if len(self.summary.problems) < PROBLEMS_KEPT:
            self.summary.problems.append(f"{item.kind}: {where}: {item.reason}")
        log = logger.info if item.kind in (GONE, CLOSED) else logger.warning
        log("%s: %s: %s", item.kind, where, item.reason)
        if item.kind == GONE and item.aid is not None:
            with self.engine.begin() as conn:
                mark_pages_gone(conn, item.aid, item.cid)

    # -- sources ---------------------------------------------------------------------------

    def _remember_source(self, key: tuple[int, int], source_id: int) -> None:
        self._source_ids[key] = source_id
        self._source_ids.move_to_end(key)
        while len(self._source_ids) > SOURCE_CACHE:
            self._source_ids.popitem(last=False)

    def _source_id(self, item: DanmakuItem) -> int:
        """The page's source id; after a resume the page may be stored by an earlier run."""
        key = (item.aid, item.page)
        source_id = self._source_ids.get(key)
        if source_id is None:
            with self.engine.begin() as conn:
                source_id = conn.execute(select(Source.id).where(
                    Source.key == source_key_video(*key))).scalar()
                if source_id is None:
                    source_id, _ = upsert_source(conn, source_key_video(*key), VIDEO_PAGE, ORIGIN,
                                                 {"aid": item.aid, "page": item.page,
                                                  "cid": item.cid})
            self._remember_source(key, source_id)
        return source_id

    # -- batches ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the buffered danmaku and the run's counts in one transaction.

        If the store refuses (down, locked), the buffer is kept for the next
        batch; only after ``FLUSH_ATTEMPTS`` failures in a row is it dropped,
        counted as failed, so one bad batch cannot stall the crawl for good.
        """
        if self.engine is None:
            return
        try:
            try:
                after = self._write_batch()
            except IntegrityError:
                # Another worker (redis mode) stored some of these dmids meanwhile:
                # everything rolled back; a second pass sees their rows.
                self._unkeyed.clear()
                after = self._write_batch()
        except DBAPIError as error:
            self._failed_flushes += 1
            if self._failed_flushes < FLUSH_ATTEMPTS:
                logger.warning("store refused a batch (%s); keeping %d danmaku for the next one",
                               error.orig, self._buffered)
                return
            logger.error("store refused a batch %d times (%s); dropping %d danmaku",
                         self._failed_flushes, error.orig, self._buffered)
            self.summary.failed += 1
            self.summary.problems.append(f"failed: {self._buffered} danmaku not stored: {error.orig}")
            after = self.summary
        self._failed_flushes = 0
        stats = self.crawler.stats
        for name in ("danmaku_new", "danmaku_filled", "danmaku_known", "segments"):
            stats.inc_value(f"danmaku/{name}", getattr(after, name) - getattr(self.summary, name))
        self.summary = after
        self._pending = CrawlSummary(target="")
        self._buffer.clear()
        self._buffered = 0
        self._last_flush = now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_S:
            self._last_log = now
            logger.info("stored so far: %s", self.summary.line())

    def _write_batch(self) -> CrawlSummary:
        """Store the buffer; returns the summary as it stands once this commits."""
        after = CrawlSummary(**{**asdict(self.summary), "problems": list(self.summary.problems)})
        for name in ("segments", "xml_lists", "history_days"):
            setattr(after, name, getattr(after, name) + getattr(self._pending, name))
        with self.engine.begin() as conn:
            for source_id, rows in self._buffer.items():
                unkeyed = self._unkeyed.get(source_id)
                if unkeyed is None:
                    unkeyed = self._unkeyed[source_id] = has_unkeyed_danmaku(conn, source_id)
                    if len(self._unkeyed) > SOURCE_CACHE:
                        self._unkeyed.pop(next(iter(self._unkeyed)))
                new, filled, known = add_crawled_danmaku(conn, source_id, rows,
                                                         match_unkeyed=unkeyed)
                after.danmaku_new += new
                after.danmaku_filled += filled
                after.danmaku_known += known
            update_run(conn, self.run_id, **self._run_values(after, "running"))
        return after

    def _run_values(self, summary: CrawlSummary, status: str, finished: bool = False) -> dict:
        summary.seconds = round(time.monotonic() - self._started, 3)
        return {"files": summary.segments + summary.xml_lists + summary.history_days,
                "sources": summary.pages_new,
                "rows": summary.danmaku_new + summary.danmaku_filled,
                "rejected": summary.failed + summary.rejected_long, "skipped": summary.danmaku_known,
                "status": status, "stats": summary.as_stats(), "finished": finished}

    def _write_run(self, *, status: str, finished: bool) -> None:
        if self.engine is None or self.run_id is None:
            return
        with self.engine.begin() as conn:
            update_run(conn, self.run_id, **self._run_values(self.summary, status, finished))
