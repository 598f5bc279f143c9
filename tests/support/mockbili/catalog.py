"""The videos a mock Bilibili serves, built from real rows of the CSV data set.

Texts, video times and send times are the data set's own (read with the same
parser as ``danmaku import csv``); what the data set lacks -- cids, dmids, sender
hashes, display fields, titles -- is made up deterministically, so a test knows
exactly what a correct crawl must store. ``expected_sources`` and
``expected_danmaku`` are that truth.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from danmaku.crawl.bvid import av_to_bv
from danmaku.importers.parsers import parse_video_csv

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mockbili"
SEGMENT_MS = 360_000
LONGEST_VIDEO_MS = 6 * 3600 * 1000
"""Video times beyond this (int32 overflows in the data set) are outliers, not duration."""
CHINA_S = 8 * 3600


@dataclass(frozen=True)
class Danmaku:
    dmid: int
    position_ms: int
    sent_at_ms: int
    sender: str
    text: str
    mode: int
    color: int
    font_size: int
    pool: int


@dataclass
class Page:
    aid: int
    page: int
    cid: int
    part: str
    duration_s: int
    danmaku: list[Danmaku] = field(default_factory=list)

    @property
    def segments(self) -> int:
        return max(1, -(-self.duration_s * 1000 // SEGMENT_MS))

    def segment_of(self, item: Danmaku) -> int:
        """Where Bilibili would file it; out-of-range video times go to segment 1."""
        if item.position_ms < 0 or item.position_ms >= self.duration_s * 1000:
            return 1
        return item.position_ms // SEGMENT_MS + 1


@dataclass
class Video:
    aid: int
    mid: int
    title: str
    pubdate: int
    pages: list[Page]

    @property
    def bvid(self) -> str:
        return av_to_bv(self.aid)


@dataclass
class Catalog:
    videos: dict[int, Video]
    uploaders: dict[int, str]
    gone: set[int] = field(default_factory=set)

    @classmethod
    def from_fixture(cls, root: Path = FIXTURE) -> Catalog:
        spec = json.loads((root / "catalog.json").read_text(encoding="utf-8"))
        videos = {}
        for v in spec["videos"]:
            pages = [
                make_page(v["aid"], number, p["part"], (root / p["csv"]).read_bytes())
                for number, p in enumerate(v["pages"], start=1)
            ]
            videos[v["aid"]] = make_video(v["aid"], v["mid"], v["title"], pages)
        return cls(videos, {int(k): n for k, n in spec["uploaders"].items()}, set(spec["gone"]))

    @classmethod
    def from_csv_tree(cls, root: Path, limit: int | None = None,
                      max_bytes: int | None = None) -> Catalog:
        """One single-page video per ``{mid}/{aid}.csv`` (for the benchmark)."""
        videos: dict[int, Video] = {}
        for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            for path in sorted(folder.glob("*.csv")):
                if limit is not None and len(videos) >= limit:
                    break
                if max_bytes is not None and path.stat().st_size > max_bytes:
                    continue
                aid = int(path.stem)
                page = make_page(aid, 1, "P1", path.read_bytes())
                videos[aid] = make_video(aid, int(folder.name), f"视频 {aid}", [page])
        mids = {v.mid for v in videos.values()}
        return cls(videos, {mid: f"uploader {mid}" for mid in mids})

    def page_by_cid(self, cid: int) -> Page | None:
        video = self.videos.get(cid // 100)
        if video is None or not 1 <= cid % 100 <= len(video.pages):
            return None
        return video.pages[cid % 100 - 1]

    def expected_sources(self) -> dict[str, dict]:
        """key -> the source fields a complete crawl must store."""
        out = {}
        for video in self.videos.values():
            for page in video.pages:
                title = video.title if len(video.pages) == 1 else (
                    f"{video.title} (P{page.page} {page.part})")
                out[f"video:{video.aid}:{page.page}"] = {
                    "aid": video.aid, "bvid": video.bvid, "cid": page.cid, "page": page.page,
                    "title": title, "uploader_mid": video.mid, "duration_s": page.duration_s,
                    "started_at_ms": video.pubdate * 1000,
                }
        return out

    def expected_danmaku(self, aids: set[int] | None = None) -> list[tuple]:
        """Sorted (key, dmid, position_ms, sent_at_ms, sender, text, mode, color, font_size,
        pool) rows."""
        rows = []
        for video in self.videos.values():
            if aids is not None and video.aid not in aids:
                continue
            for page in video.pages:
                key = f"video:{video.aid}:{page.page}"
                rows.extend((key, d.dmid, d.position_ms, d.sent_at_ms, d.sender, d.text, d.mode,
                             d.color, d.font_size, d.pool) for d in page.danmaku)
        return sorted(rows)


def make_page(aid: int, number: int, part: str, csv_bytes: bytes) -> Page:
    records = [r for r in parse_video_csv(csv_bytes) if isinstance(r, tuple)]
    cid = aid * 100 + number
    danmaku = [made_up_danmaku(cid, index, text, position, sent)
               for index, (_, text, position, sent) in enumerate(records)]
    in_range = [d.position_ms for d in danmaku if 0 <= d.position_ms <= LONGEST_VIDEO_MS]
    duration_s = (max(in_range, default=0) // 1000) + 30
    return Page(aid, number, cid, part, duration_s, danmaku)


def make_video(aid: int, mid: int, title: str, pages: list[Page]) -> Video:
    first = min((d.sent_at_ms for p in pages for d in p.danmaku), default=1_546_300_800_000)
    return Video(aid, mid, title, first // 1000 - 3600, pages)


def made_up_danmaku(cid: int, index: int, text: str, position_ms: int, sent_at_ms: int) -> Danmaku:
    """The fields the CSV data set lacks, as a function of (cid, row index)."""
    uid = 1000 + (index * 7919) % 97
    return Danmaku(
        dmid=40_000_000_000_000_000 + cid * 100_000 + index,
        position_ms=position_ms,
        sent_at_ms=sent_at_ms,
        sender=f"{zlib.crc32(str(uid).encode()):08x}",
        text=text,
        mode=(1, 1, 1, 5, 4, 1)[index % 6],
        color=(16777215, 16777215, 16711680, 65280)[index % 4],
        font_size=18 if index % 7 == 0 else 25,
        pool=1 if index % 50 == 49 else 0,
    )


def china_date(sent_at_ms: int) -> str:
    """YYYY-MM-DD of a send time in China (the history endpoint's days)."""
    return datetime.fromtimestamp(sent_at_ms / 1000 + CHINA_S, UTC).date().isoformat()
