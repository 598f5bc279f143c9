"""A reproducible sample of real video danmaku from ``shared/data`` (distinct, non-empty texts)."""

from __future__ import annotations

import random

from tests.conftest import SHARED_DATA


def real_danmaku(count: int, *, seed: int = 7) -> list[str]:
    """``count`` distinct real danmaku (stripped, non-empty), from randomly chosen videos."""
    from danmaku.importers.parsers import parse_video_csv

    files = sorted((SHARED_DATA / "video_danmaku").rglob("*.csv"))
    random.Random(seed).shuffle(files)
    seen: dict[str, None] = {}
    for path in files:
        for row in parse_video_csv(path.read_bytes()):
            if isinstance(row, tuple) and row[1].strip():
                seen.setdefault(row[1].strip(), None)
        if len(seen) >= count:
            break
    return list(seen)[:count]
