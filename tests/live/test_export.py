"""The text-tree and XML exports on their own: formats, restarts, kill -9 safety."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

from danmaku.importers.parsers import LiveDanmaku, parse_live_chat
from danmaku.live.export import TxtExport, XmlExport, day_file_name, heartbeat_line, xml_file_name
from danmaku.live.messages import Chat

CHINA = timezone(timedelta(hours=8))
# 2020-03-08 23:59:58.500 China time, then two seconds later (the next China day)
LATE = int(datetime(2020, 3, 8, 23, 59, 58, 500000, tzinfo=CHINA).timestamp() * 1000)


def chat(ms: int, uid: int, text: str, *, uname: str = "", super_chat: bool = False) -> Chat:
    return Chat(identity=ms, sent_at_ms=ms, uid=uid, uname=uname or f"u{uid}", text=text,
                super_chat=super_chat, price=30 if super_chat else None, keep_s=60 if super_chat else None,
                mode=None if super_chat else 1, font_size=None if super_chat else 25,
                color=None if super_chat else 16777215)


def test_day_names_and_heartbeat_lines_use_china_time() -> None:
    assert day_file_name(LATE) == "2020-3-8.txt" and day_file_name(LATE + 2000) == "2020-3-9.txt"
    assert heartbeat_line(LATE, 13) == "TIME23:59ONLINE13\n"
    assert heartbeat_line(LATE + 2000 + 21 * 3600_000, 7) == "TIME21:0ONLINE7\n"  # not zero-padded


def test_txt_lines_parse_back_exactly(tmp_path: Path) -> None:
    export = TxtExport(tmp_path)
    texts = ["兰子姐晚上好", "a:b:c ", "ends in spaces   ", "12:34:56", "\u3000全角"]
    for i, t in enumerate(texts):
        export.added(5, 0, chat(LATE - 10_000 + i, 100 + i, t))
    export.added(5, 0, chat(LATE - 1, 9, "a super chat", super_chat=True))  # not in the text tree
    export.heartbeat(5, LATE - 500, 13)
    export.close()
    data = (tmp_path / "5" / "2020-3-8.txt").read_bytes()
    items = list(parse_live_chat(data))
    assert [(d.sent_at_ms, d.sender, d.text) for d in items if isinstance(d, LiveDanmaku)] == [
        (LATE - 10_000 + i, str(100 + i), t) for i, t in enumerate(texts)]
    assert all(isinstance(d, LiveDanmaku) for d in items)  # TIME, SPEAKERNUM, V2 lines are known kinds
    lines = data.decode().splitlines()
    assert lines[-2] == "SPEAKERNUM5;100:u100:1,101:u101:1,102:u102:1,103:u103:1,104:u104:1"
    assert lines[-1] == "V2" and "TIME23:59ONLINE13" in lines


def test_midnight_splits_files_and_a_restart_appends_with_whole_counts(tmp_path: Path) -> None:
    export = TxtExport(tmp_path)
    export.added(5, 0, chat(LATE, 1, "before midnight", uname="甲"))
    export.added(5, 0, chat(LATE + 2000, 1, "after midnight", uname="甲"))
    export.close()
    assert (tmp_path / "5" / "2020-3-8.txt").read_text().splitlines()[-2] == "SPEAKERNUM1;1:甲:1"
    again = TxtExport(tmp_path)  # the recorder restarted the same day
    again.added(5, 0, chat(LATE + 3000, 2, "new speaker", uname="乙"))
    again.added(5, 0, chat(LATE + 4000, 1, "old speaker again", uname="甲"))
    again.close()
    lines = (tmp_path / "5" / "2020-3-9.txt").read_text().splitlines()
    assert lines[-2] == "SPEAKERNUM2;1:甲:2,2:乙:1" and lines[-1] == "V2"


def test_line_breaks_cannot_split_a_danmaku(tmp_path: Path) -> None:
    export = TxtExport(tmp_path)
    export.added(5, 0, chat(LATE, 1, "two\nlines"))
    export.close()
    items = [d for d in parse_live_chat((tmp_path / "5" / "2020-3-8.txt").read_bytes())]
    assert [d.text for d in items if isinstance(d, LiveDanmaku)] == ["two lines"]


def test_xml_is_valid_after_every_flush_and_resumes_after_a_restart(tmp_path: Path) -> None:
    start = LATE - 60_000
    export = XmlExport(tmp_path, short_ids={5: 55})
    export.opened(5, start)
    export.added(5, start, chat(start + 1500, 1, "<b>&\"你好\"</b>"))
    export.flush()
    path = tmp_path / "5" / xml_file_name(5, start)
    assert path.name == "5-20200308-235858.xml"
    root = ET.parse(path).getroot()  # valid without close(): a kill -9 here leaves a whole file
    [d] = root.findall("d")
    assert d.get("p") == f"1.500,1,25,16777215,{start + 1500},0,1,0" and d.text == '<b>&"你好"</b>'
    export.added(5, start, chat(start + 2000, 2, "sc\x01 text", super_chat=True, uname="老板"))
    export.flush()
    # as if killed: a new exporter appends to the same file
    resumed = XmlExport(tmp_path)
    resumed.added(5, start, chat(start + 3000, 3, "after restart"))
    resumed.close()
    root = ET.parse(path).getroot()
    assert [e.text for e in root.findall("d")] == ['<b>&"你好"</b>', "after restart"]
    [sc] = root.findall("sc")
    assert (sc.get("ts"), sc.get("user"), sc.get("uid"), sc.get("price"), sc.get("time"), sc.text) == (
        "2.000", "老板", "2", "30", "60", "sc text")
    assert root.find("BililiveRecorderRecordInfo").get("shortid") == "55"
    assert path.read_text().count("<?xml") == 1


def test_few_file_handles_for_many_rooms(tmp_path: Path) -> None:
    export = XmlExport(tmp_path, max_open=4)
    txt = TxtExport(tmp_path / "txt", max_open=4)
    for round_ in range(2):
        for room in range(1, 21):
            export.added(room, LATE, chat(LATE + round_, room, f"r{round_}"))
            txt.added(room, 0, chat(LATE + round_, room, f"r{round_}"))
            assert len(export._handles.files) <= 4 and len(txt._handles.files) <= 4
    export.close()
    txt.close()
    for room in range(1, 21):
        root = ET.parse(tmp_path / str(room) / xml_file_name(room, LATE)).getroot()
        assert [e.text for e in root.findall("d")] == ["r0", "r1"]
        text = (tmp_path / "txt" / str(room) / "2020-3-8.txt").read_text()
        assert text.count(":r0\n") == text.count(":r1\n") == 1
