"""Helpers of the recorder tests: run a recorder against a mock, read the store back."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from sqlalchemy import Engine, text

from danmaku.live.recorder import Recorder, RecordOptions, RecordSummary
from danmaku.store.writes import LIVE_SUPER_CHAT_POOL
from tests.conftest import FIXTURES
from tests.support.livemock import LiveMock, MockRoom

LIVE_FIXTURES = FIXTURES / "live_danmaku"


def fast_options(mock: LiveMock, **overrides) -> RecordOptions:
    """Politeness off against the local mock; back-offs in milliseconds."""
    values = {"base_url": mock.url, "sessdata": "", "api_interval_s": 0.0, "backoff_base_s": 0.02,
              "backoff_cap_s": 0.1, "flush_interval_s": 0.1, "heartbeat_s": 0.2}
    values.update(overrides)
    return RecordOptions(**values)


def run_recorder(engine: Engine, rooms: list[int], options: RecordOptions, *, expect_rows: int,
                 settle=lambda recorder: True, timeout: float = 30.0) -> tuple[RecordSummary, Recorder]:
    """Record until ``expect_rows`` new rows are committed and ``settle(recorder)``; then stop."""

    async def main() -> tuple[RecordSummary, Recorder]:
        stop = asyncio.Event()
        recorder = Recorder(engine, rooms, options)
        task = asyncio.create_task(recorder.record(stop))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not task.done():
            writer = recorder.writer
            if writer is not None and writer.stats.rows_new >= expect_rows and settle(recorder):
                break
            await asyncio.sleep(0.02)
        stop.set()
        return await task, recorder

    return asyncio.run(main())


def not_broadcasting(recorder: Recorder) -> bool:
    return all(not s.broadcasting for s in recorder.statuses())


def expected_broadcasts(room: MockRoom) -> list[tuple[str, list[tuple]]]:
    """(source key, sorted rows) per broadcast the mock played; rows (sent_at_ms, sender, text, pool)."""
    return sorted(
        (f"live:{room.room_id}:{b.live_time_s * 1000}",
         sorted((s.sent_at_ms, str(s.uid), s.text, LIVE_SUPER_CHAT_POOL if s.super_chat else 0)
                for s in b.sent))
        for b in room.broadcasts)


def stored_broadcasts(engine: Engine, room_id: int) -> list[tuple[str, list[tuple]]]:
    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT id, key FROM source WHERE room_id = :r"), {"r": room_id}).all())
        rows = defaultdict(list)
        for source_id, *row in conn.execute(text(
                "SELECT source_id, sent_at_ms, sender, text, pool FROM danmaku "
                "WHERE source_id IN (SELECT id FROM source WHERE room_id = :r)"), {"r": room_id}):
            rows[source_id].append(tuple(row))
    return sorted((keys[source_id], sorted(rows[source_id])) for source_id in keys)


def sources(engine: Engine, room_id: int) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT s.key, s.status, s.origin, s.started_at_ms, s.ended_at_ms, "
            "MIN(d.sent_at_ms) AS first_ms, MAX(d.sent_at_ms) AS last_ms FROM source s "
            "LEFT JOIN danmaku d ON d.source_id = s.id WHERE s.room_id = :r "
            "GROUP BY s.id, s.key, s.status, s.origin, s.started_at_ms, s.ended_at_ms ORDER BY s.key"),
            {"r": room_id})]
