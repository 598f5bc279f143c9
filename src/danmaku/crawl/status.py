"""What the crawler has done, read back from the store (``danmaku crawl status``).

Each crawl is a ``run`` row of kind ``crawl`` whose ``stats_json`` the store
pipeline rewrites with every committed batch, so a running crawl shows its
progress here too. Store-wide figures count what is stored, whichever run (or
import) stored it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, func, select

from danmaku.store.models import VIDEO_PAGE, Danmaku, Run, Source

RUN_KIND = "crawl"
COUNTERS = ("videos", "pages", "pages_new", "pages_merged", "segments", "xml_lists",
            "history_days", "danmaku_new", "danmaku_filled", "danmaku_known", "gone", "closed",
            "fallbacks", "failed", "rejected_long")


def crawl_status(engine: Engine, *, last: int = 10, problems: int = 10) -> dict[str, Any]:
    """Recent crawl runs (newest first), totals over all of them, and store figures."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Run.id, Run.target, Run.status, Run.started_at_ms, Run.finished_at_ms,
                   Run.stats_json).where(Run.kind == RUN_KIND).order_by(Run.id.desc())
        ).all()
        crawled_pages = conn.execute(select(func.count()).select_from(Source).where(
            Source.kind == VIDEO_PAGE, Source.cid.is_not(None))).scalar_one()
        gone_pages = conn.execute(select(func.count()).select_from(Source).where(
            Source.kind == VIDEO_PAGE, Source.status == "gone")).scalar_one()
        with_dmid = conn.execute(select(func.count()).select_from(Danmaku).where(
            Danmaku.dmid.is_not(None))).scalar_one()
    runs = []
    totals = dict.fromkeys(COUNTERS, 0)
    for run_id, target, status, started, finished, stats_json in rows:
        stats = json.loads(stats_json) if stats_json else {}
        counts = {name: int(stats.get(name, 0)) for name in COUNTERS}
        for name, value in counts.items():
            totals[name] += value
        if len(runs) < last:
            runs.append({"id": run_id, "target": target, "status": status,
                         "started_at_ms": started, "finished_at_ms": finished,
                         "seconds": stats.get("seconds"), **counts,
                         "problems": list(stats.get("problems", []))[:problems]})
    return {
        "runs": runs,
        "total_runs": len(rows),
        "totals": totals,
        "store": {"crawled_pages": int(crawled_pages), "gone_pages": int(gone_pages),
                  "danmaku_with_dmid": int(with_dmid)},
    }
