"""Figures about what the store holds (``danmaku db stats``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from danmaku.store.models import Danmaku, Reject, Run, Source


def store_stats(engine: Engine, *, top: int = 20) -> dict[str, Any]:
    """Totals, per kind, per uploader/room (largest first), time range, rejects, runs."""
    with engine.connect() as conn:
        per_kind = conn.execute(
            select(Source.kind, func.count(func.distinct(Source.id)), func.count(Danmaku.id))
            .select_from(Source).outerjoin(Danmaku, Danmaku.source_id == Source.id)
            .group_by(Source.kind).order_by(Source.kind)
        ).all()
        first, last = conn.execute(select(func.min(Danmaku.sent_at_ms), func.max(Danmaku.sent_at_ms))).one()
        owner = func.coalesce(Source.uploader_mid, Source.room_id)
        per_owner = conn.execute(
            select(Source.kind, owner, func.count(func.distinct(Source.id)), func.count(Danmaku.id))
            .select_from(Source).outerjoin(Danmaku, Danmaku.source_id == Source.id)
            .group_by(Source.kind, owner).order_by(func.count(Danmaku.id).desc(), owner).limit(top)
        ).all()
        rejects = conn.execute(
            select(Reject.reason, func.count()).group_by(Reject.reason).order_by(func.count().desc())
        ).all()
        runs = conn.execute(
            select(Run.id, Run.kind, Run.status, Run.files, Run.rows, Run.rejected)
            .order_by(Run.id.desc()).limit(5)
        ).all()
    return {
        "sources": sum(int(n) for _, n, _ in per_kind),
        "danmaku": sum(int(n) for _, _, n in per_kind),
        "by_kind": {kind: {"sources": int(s), "danmaku": int(d)} for kind, s, d in per_kind},
        "first_sent_at_ms": int(first) if first is not None else None,
        "last_sent_at_ms": int(last) if last is not None else None,
        "top_owners": [
            {"kind": kind, "id": int(o) if o is not None else None, "sources": int(s), "danmaku": int(d)}
            for kind, o, s, d in per_owner
        ],
        "rejected": sum(int(n) for _, n in rejects),
        "rejected_by_reason": {reason: int(n) for reason, n in rejects},
        "recent_runs": [
            {"id": i, "kind": k, "status": st, "files": int(f), "rows": int(r), "rejected": int(rj)}
            for i, k, st, f, r, rj in runs
        ],
    }
