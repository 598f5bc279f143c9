"""What the spider hands to the store pipeline: pages, danmaku batches, problems."""

from __future__ import annotations

from dataclasses import dataclass, field

from danmaku.crawl.danmaku import Row


@dataclass
class PageItem:
    """One page (cid) of a video: becomes (or fills) the source ``video:{aid}:{page}``."""

    aid: int
    page: int
    cid: int
    bvid: str | None = None
    title: str | None = None
    uploader_mid: int | None = None
    duration_s: int | None = None
    published_at_ms: int | None = None
    first_of_video: bool = False


@dataclass
class DanmakuItem:
    """The danmaku of one response: a protobuf segment, the XML list or a history day."""

    aid: int
    page: int
    cid: int
    via: str  # "segment", "xml" or "history"
    segment: int = 0
    rows: list[Row] = field(default_factory=list)


GONE = "gone"
CLOSED = "closed"
FAILED = "failed"
FALLBACK = "fallback"


@dataclass
class ProblemItem:
    """Something the crawl could not get: gone video, closed danmaku, given-up request."""

    kind: str  # GONE, CLOSED, FAILED or FALLBACK
    url: str
    reason: str
    aid: int | None = None
    page: int | None = None
    cid: int | None = None
