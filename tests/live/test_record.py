"""The recorder end to end against the local chat mock: the store ends exactly equal to what was sent.

The mock plays real lines of the live-chat data set (two rooms, eight
broadcasts), zlib and brotli bundles, LIVE twice / PREPARING, noise commands,
protobuf bodies, garbage frames, a dropped connection whose last frames are
sent again, a dead chat host listed first, an auth refusal, a -352 answer, a
room that does not exist and the same room under its short id.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy import text

from danmaku.importers.live_chat import import_live_chat
from danmaku.live.api import Host, websocket_url
from danmaku.live.storage import ORIGIN, StoreWriter
from danmaku.store.db import make_engine
from tests.live.support import (
    LIVE_FIXTURES,
    expected_broadcasts,
    fast_options,
    not_broadcasting,
    run_recorder,
    sources,
    stored_broadcasts,
)
from tests.support.livemock import LiveMock, build_room


def two_rooms(**kwargs):
    busy = build_room(1603600, [LIVE_FIXTURES / "1603600" / "2020-9-19.txt"], drop_after=4, short_id=88,
                      **kwargs)
    quiet = build_room(10001030, sorted((LIVE_FIXTURES / "10001030").glob("*.txt")), **kwargs)
    return busy, quiet


def test_recording_end_to_end(db_url: str, tmp_path: Path) -> None:
    """One recording (on SQLite and on PostgreSQL), then every check of what it left."""
    busy, quiet = two_rooms()
    quiet.refuse_auth = 1
    engine = make_engine(db_url)
    with LiveMock([busy, quiet], dead_host_first=True, risk_control_times=1) as mock:
        options = fast_options(mock, export_txt=tmp_path / "txt", export_xml=tmp_path / "xml")
        summary, recorder = run_recorder(
            engine, [88, 10001030, 424242, 1603600], options,
            expect_rows=len(busy.expected) + len(quiet.expected), settle=not_broadcasting)
    try:
        check_store_equals_what_was_sent(engine, busy, quiet, summary)
        check_failing_rooms_did_not_disturb_the_others(recorder)
        check_requests_signed_with_device_cookies_and_anonymous(mock)
        check_txt_export_reimports_to_the_same_rows(engine, busy, quiet, tmp_path)
        check_xml_export_is_bililiverecorder_shaped(busy, tmp_path)
    finally:
        engine.dispose()


def check_store_equals_what_was_sent(engine, busy, quiet, summary) -> None:
    for room in (busy, quiet):
        assert stored_broadcasts(engine, room.room_id) == expected_broadcasts(room)
        for source in sources(engine, room.room_id):
            assert source["status"] == "ended" and source["origin"] == ORIGIN
            assert source["started_at_ms"] <= source["first_ms"] <= source["last_ms"] <= source["ended_at_ms"]
    assert summary.stored == len(busy.expected) + len(quiet.expected) == 574
    assert summary.duplicates > 0  # the frames sent again after the drop
    assert summary.protocol_errors > 0 and summary.sources_opened == 8
    super_chats = sum(s.super_chat for room in (busy, quiet) for s in room.expected)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM danmaku WHERE pool = 3")).scalar() == super_chats > 0
        run = conn.execute(text("SELECT kind, status, rows FROM run")).one()
    assert tuple(run) == ("live_record", "stopped", 574)


def check_failing_rooms_did_not_disturb_the_others(recorder) -> None:
    by_room = {s.room: s for s in recorder.statuses()}
    assert by_room[424242].stopped and "no such room" in by_room[424242].last_error
    assert by_room[1603600].stopped and "same room as 88" in by_room[1603600].last_error
    assert by_room[88].reconnects >= 1 and by_room[88].stored == 540
    assert by_room[10001030].stored == 34 and by_room[88].popularity == 4321


def check_requests_signed_with_device_cookies_and_anonymous(mock) -> None:
    infos = mock.requests("getDanmuInfo")
    assert infos and all({"wts", "w_rid", "id", "type"} <= set(r["query"]) for r in infos)
    assert all(r["cookies"].get("buvid3") == mock.buvid3 and r["cookies"].get("buvid4") == mock.buvid4
               for r in infos)
    assert all("SESSDATA" not in r["cookies"] and "Mozilla/5.0" in r["user_agent"] for r in mock.http_log)
    # one -352 and one refused auth: each fetched a fresh token
    assert len(infos) >= 4
    auths = [a for a in mock.auth_log if a["roomid"] == 10001030]
    assert len({a["key"] for a in auths}) >= 2
    assert all(a["uid"] == 0 and a.get("buvid") == mock.buvid3 and a["protover"] == 3 for a in mock.auth_log)
    assert len(mock.requests("finger/spi")) >= 2  # fetched again after the -352


def check_txt_export_reimports_to_the_same_rows(engine, busy, quiet, out: Path) -> None:
    again = make_engine(f"sqlite:///{out / 'reimport.sqlite'}")
    summary = import_live_chat(again, out / "txt")
    assert summary.rejected == 0
    for room in (busy, quiet):
        recorded_rows = [sorted(r[:3] for r in rows if r[3] != 3)
                         for _, rows in stored_broadcasts(engine, room.room_id)]
        reimported = [sorted(r[:3] for r in rows) for _, rows in stored_broadcasts(again, room.room_id)]
        assert sorted(reimported) == sorted(recorded_rows)
    files = sorted((out / "txt" / "1603600").glob("*.txt"))
    content = files[-1].read_text(encoding="utf-8").splitlines()
    assert content[-1] == "V2" and content[-2].startswith("SPEAKERNUM")
    assert any(line.startswith("TIME") and "ONLINE4321" in line for line in content)
    again.dispose()


def check_xml_export_is_bililiverecorder_shaped(busy, out: Path) -> None:
    files = sorted((out / "xml" / "1603600").glob("*.xml"))
    assert len(files) == len(busy.broadcasts) == 2
    for path, broadcast in zip(files, sorted(busy.broadcasts, key=lambda b: b.live_time_s), strict=True):
        root = ET.parse(path).getroot()
        info = root.find("BililiveRecorderRecordInfo")
        assert info.get("roomid") == "1603600" and info.get("shortid") == "88"
        d = [(int(e.get("p").split(",")[4]), e.get("p").split(",")[6], e.text or "")
             for e in root.findall("d")]
        sc = [(e.get("uid"), e.text or "", e.get("price"), e.get("time")) for e in root.findall("sc")]
        danmaku = [s for s in broadcast.sent if not s.super_chat]
        assert sorted(d) == sorted((s.sent_at_ms, str(s.uid), s.text) for s in danmaku)
        assert sorted(sc) == sorted((str(s.uid), s.text, "30", "60") for s in broadcast.sent if s.super_chat)
        first = root.find("d").get("p").split(",")
        offset = (int(first[4]) - broadcast.live_time_s * 1000) / 1000
        assert float(first[0]) == pytest.approx(offset, abs=0.001) and first[1:4] == ["1", "25", "16777215"]
        assert {e.get("user") for e in root.findall("d")} <= {s.uname for s in broadcast.sent}


def test_a_restart_resumes_the_open_broadcast_without_duplicates(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    paths = [LIVE_FIXTURES / "1603600" / "2020-9-19.txt"]
    first = build_room(1603600, paths, last_open=True)
    with LiveMock([first]) as mock:
        run_recorder(engine, [1603600], fast_options(mock), expect_rows=len(first.expected))
    # restarted while the last broadcast goes on; the server sends its frames again: nothing
    # new, the same (resumed) source
    second = build_room(1603600, paths, last_open=True, offset_ms=first.offset_ms)
    second.frames = second.frames[second.broadcasts[-1].first_frame:]
    second.live = True
    again = len(second.broadcasts[-1].sent)
    with LiveMock([second]) as mock:
        summary, _ = run_recorder(engine, [1603600], fast_options(mock), expect_rows=0,
                                  settle=lambda r: r.statuses()[0].received == again)
    assert summary.received == again and summary.stored == 0 and summary.duplicates == again
    assert stored_broadcasts(engine, 1603600) == expected_broadcasts(first)
    assert [s["status"] for s in sources(engine, 1603600)] == ["ended", "on_air"]


def test_backpressure_from_a_slow_store_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    import time

    busy, _ = two_rooms()
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    apply = StoreWriter._apply
    peak = []

    def slow_apply(self, batch):
        peak.append(self.queue.qsize())
        time.sleep(0.02)  # a database that takes 20 ms per transaction
        return apply(self, batch)

    monkeypatch.setattr(StoreWriter, "_apply", slow_apply)
    with LiveMock([busy]) as mock:
        options = fast_options(mock, queue_size=8, batch_rows=16)
        summary, _ = run_recorder(engine, [1603600], options, expect_rows=len(busy.expected),
                                  settle=not_broadcasting)
    assert stored_broadcasts(engine, 1603600) == expected_broadcasts(busy)
    assert max(peak) <= 8 and len(peak) >= len(busy.expected) // 16


def test_plain_http_base_url_means_plain_ws() -> None:
    host = Host("127.0.0.1", 2243, 443, 2244)
    assert websocket_url(host, "http://127.0.0.1:8080") == "ws://127.0.0.1:2244/sub"
    assert websocket_url(host, "https://proxy.example") == "wss://127.0.0.1:443/sub"
    assert websocket_url(Host("broadcastlv.chat.bilibili.com", 2243, 443, 2244), None) == \
        "wss://broadcastlv.chat.bilibili.com:443/sub"


def test_masked_anonymous_danmaku_store_uid_zero(tmp_path: Path) -> None:
    room = build_room(10001030, sorted((LIVE_FIXTURES / "10001030").glob("*.txt")), masked=True)
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    with LiveMock([room]) as mock:
        run_recorder(engine, [10001030], fast_options(mock), expect_rows=len(room.expected),
                     settle=not_broadcasting)
    stored = stored_broadcasts(engine, 10001030)
    assert stored == expected_broadcasts(room)
    assert {row[1] for _, rows in stored for row in rows if row[3] == 0} == {"0"}


def test_recorder_stops_cleanly_when_cancelled(tmp_path: Path) -> None:
    busy, _ = two_rooms()
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    from danmaku.live.recorder import Recorder

    async def main() -> None:
        with LiveMock([busy]) as mock:
            stop = asyncio.Event()
            recorder = Recorder(engine, [1603600], fast_options(mock))
            task = asyncio.create_task(recorder.record(stop))
            while recorder.writer is None or recorder.writer.stats.rows_new == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM run")).scalar() == "interrupted"


def test_danmaku_over_the_length_cap_are_counted_not_stored(tmp_path: Path, monkeypatch) -> None:
    """The store's one cap (DANMAKU_MAX_DANMAKU_CHARS) holds for the recorder as for imports and crawls."""
    monkeypatch.setenv("DANMAKU_MAX_DANMAKU_CHARS", "4")
    room = build_room(10001030, sorted((LIVE_FIXTURES / "10001030").glob("*.txt")))
    sent = [row for _, rows in expected_broadcasts(room) for row in rows]
    short = sorted(row for row in sent if len(row[2]) <= 4)
    assert 0 < len(short) < len(sent)
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    with LiveMock([room]) as mock:
        summary, _ = run_recorder(engine, [10001030], fast_options(mock), expect_rows=len(short),
                                  settle=not_broadcasting)
    stored = sorted(row for _, rows in stored_broadcasts(engine, 10001030) for row in rows)
    assert stored == short
    assert summary.too_long == len(sent) - len(short)
