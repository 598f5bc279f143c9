"""Bilibili danmaku bodies -> store rows: protobuf segments, segment layout, XML.

Pure functions over bytes, so the spider, the tests and ``bench/crawl.py`` call
the same code. Protobuf goes through the official ``protobuf`` runtime and the
messages of ``crawler/proto/dm.proto``: unknown fields are skipped by the
runtime, a body that does not parse raises ``DecodeError``.

A row is a plain tuple in ``ROW_FIELDS`` order, in the store's units (ms), so a
segment of 6000 danmaku costs one list comprehension, not 6000 dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from lxml import etree

from danmaku.crawl.api import SEGMENT_MS
from danmaku.crawl.proto.dm_pb2 import DmSegMobileReply, DmWebViewReply

ROW_FIELDS = (
    "dmid", "position_ms", "sent_at_ms", "sender", "text", "mode", "color", "font_size", "pool",
)
Row = tuple[int, int, int, str, str, int, int, int, int]

__all__ = [
    "DecodeError", "ROW_FIELDS", "Row", "SegmentLayout", "decode_segment", "decode_view",
    "parse_xml", "segment_count",
]


def decode_segment(data: bytes) -> list[Row]:
    """Rows of one ``DmSegMobileReply`` body (an empty body is an empty segment)."""
    return [
        (e.id, e.progress, e.ctime * 1000, e.midHash, e.content, e.mode, e.color, e.fontsize,
         e.pool)
        for e in DmSegMobileReply.FromString(data).elems
    ]


@dataclass(frozen=True, slots=True)
class SegmentLayout:
    """What ``dm/web/view`` says about a page: closed or not, and its segments."""

    closed: bool
    segments: int
    segment_ms: int
    count: int


def decode_view(data: bytes) -> SegmentLayout:
    """Parse a ``DmWebViewReply`` body; ``segments`` is 0 when it gives none."""
    reply = DmWebViewReply.FromString(data)
    return SegmentLayout(
        closed=reply.state == 1,
        segments=max(reply.dm_sge.total, 0),
        segment_ms=reply.dm_sge.page_size,
        count=reply.count,
    )


def fallback_segments(duration_s: int | float | None) -> int:
    """ceil(duration / 6 min), at least 1: what to fetch when ``dm/web/view`` fails."""
    if not duration_s or duration_s <= 0:
        return 1
    return max(1, math.ceil(duration_s * 1000 / SEGMENT_MS))


def segment_count(layout: SegmentLayout | None, duration_s: int | float | None) -> int:
    """Segments to fetch: the layout's count when it is plausible, else from the duration.

    A count far beyond the duration (a garbled body that happened to parse)
    would send thousands of requests for nothing, so it is capped at twice the
    duration's count plus ten.
    """
    fallback = fallback_segments(duration_s)
    if layout is not None and 0 < layout.segments <= 2 * fallback + 10:
        return layout.segments
    return fallback


_STRICT = etree.XMLParser(huge_tree=True, resolve_entities=False, no_network=True)
_LENIENT = etree.XMLParser(recover=True, huge_tree=True, resolve_entities=False, no_network=True)


def parse_xml(data: bytes) -> list[Row]:
    """Rows of the XML list, ``<d p="progress_s,mode,fontsize,color,ctime,pool,midHash,dmid,...">``.

    Raises ``ValueError`` when the body is not that XML (truncated, an error
    page); a ``<d>`` whose ``p`` does not parse is skipped. A complete document
    (ending in ``</i>``) with a stray invalid character is read leniently; an
    incomplete one is an error, never a silent partial list.
    """
    try:
        root = etree.fromstring(data, _STRICT)
    except etree.XMLSyntaxError as error:
        if not data.rstrip().endswith(b"</i>"):
            raise ValueError(f"not a complete XML list: {error}") from error
        root = etree.fromstring(data, _LENIENT)
    if root is None or root.tag != "i":
        raise ValueError("not a danmaku XML list (no <i> root)")
    rows: list[Row] = []
    for element in root.iter("d"):
        fields = (element.get("p") or "").split(",")
        if len(fields) < 8:
            continue
        try:
            rows.append((
                int(fields[7]), round(float(fields[0]) * 1000), int(fields[4]) * 1000, fields[6],
                element.text or "", int(fields[1]), int(fields[3]), int(fields[2]), int(fields[5]),
            ))
        except ValueError:
            continue
    return rows
