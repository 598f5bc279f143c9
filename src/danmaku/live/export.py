"""Files a recording can be shared as: the community's text tree and BililiveRecorder XML.

``TxtExport`` writes ``{dir}/{room_id}/{Y-M-D}.txt`` (China day, month and day
not zero-padded), the format of the public live-chat database that ``danmaku
import live`` reads (``../shared/docs/data-formats.md`` section 2):
``{unix_ms}:{uid}:{text}`` per danmaku, ``TIME{h}:{m}ONLINE{n}`` per heartbeat
answer (China clock, every 30 s as the community's recorders wrote them), and,
when a file is finished (next day, or the recorder stops), the
``SPEAKERNUM{n};{uid}:{uname}:{count},...`` summary and the ``V2`` marker. A
file the recorder meets again (a restart the same day) is appended to, and its
summary counts the speakers already in it. Super chats are not written there:
the format cannot mark them, and importing them as plain danmaku would change
the rows. A text with a line break (live danmaku cannot hold one; the guard is
for safety) has it written as a space, since the format is one line per danmaku.

``XmlExport`` writes one ``{dir}/{room_id}/{room_id}-{YYYYmmdd-HHMMSS}.xml`` per
source (China time of its start): ``<d p="{s},{mode},{size},{color},{ms},0,{uid},0"
user="...">`` per danmaku, ``<sc ts="{s}" user uid price time>`` per super chat,
``s`` being seconds since the broadcast began -- BililiveRecorder's layout, which
danmaku players and converters read. After every flush the file ends with
``</i>``, so it is valid XML even after ``kill -9``; the next write overwrites
that tail.

Both are fed, after each store commit, with exactly the rows that were new in the
store, so an export never holds a danmaku twice (``danmaku.live.storage``).
Handles are kept in a small LRU so hundreds of rooms do not exhaust file
descriptors.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Protocol
from xml.sax.saxutils import escape, quoteattr

from danmaku.importers.parsers import LiveDanmaku, live_file_date, parse_live_chat
from danmaku.live.messages import Chat

CHINA = timezone(timedelta(hours=8))
MAX_OPEN_FILES = 128
XML_TAIL = b"</i>\n"
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff\ud800-\udfff]")


class Exporter(Protocol):
    """What the store writer calls after each commit."""

    def opened(self, room_id: int, started_ms: int) -> None: ...

    def added(self, room_id: int, started_ms: int, chat: Chat) -> None: ...

    def closed(self, room_id: int, started_ms: int) -> None: ...

    def heartbeat(self, room_id: int, wall_ms: int, popularity: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def china_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(CHINA)


def day_file_name(ms: int) -> str:
    """``2020-3-8.txt``: the China day of a unix-ms time, as the community names files."""
    t = china_time(ms)
    return f"{t.year}-{t.month}-{t.day}.txt"


def txt_line(chat: Chat) -> str:
    text = chat.text.replace("\r\n", " ").replace("\n", " ")
    return f"{chat.sent_at_ms}:{chat.uid}:{text}\n"


def heartbeat_line(wall_ms: int, popularity: int) -> str:
    t = china_time(wall_ms)
    return f"TIME{t.hour}:{t.minute}ONLINE{popularity}\n"


def speakers_line(speakers: dict[int, list]) -> str:
    """``SPEAKERNUM{n};{uid}:{uname}:{count},...`` in uid order (as the community's files)."""
    parts = ",".join(f"{uid}:{name}:{count}" for uid, (name, count) in sorted(speakers.items()))
    return f"SPEAKERNUM{len(speakers)};{parts}\n"


class _Handles:
    """Open files by path, least recently used closed first (``on_evict`` sees them go)."""

    def __init__(self, limit: int, on_evict) -> None:
        self.limit = limit
        self.on_evict = on_evict
        self.files: OrderedDict[Path, IO] = OrderedDict()

    def get(self, path: Path, opener) -> IO:
        handle = self.files.get(path)
        if handle is not None:
            self.files.move_to_end(path)
            return handle
        while len(self.files) >= self.limit:
            old_path, old = self.files.popitem(last=False)
            self.on_evict(old_path, old)
        handle = self.files[path] = opener(path)
        return handle

    def pop(self, path: Path) -> IO | None:
        return self.files.pop(path, None)


class _DayFile:
    """One ``{room}/{day}.txt`` being written: its speakers so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.speakers: dict[int, list] = {}
        if path.exists():
            self._count_existing(path.read_bytes())

    def _count_existing(self, data: bytes) -> None:
        names: dict[int, str] = {}
        for line in data.split(b"\n"):
            if line.startswith(b"SPEAKERNUM") and b";" in line:
                for entry in line.split(b";", 1)[1].decode("utf-8", "replace").split(","):
                    uid, _, rest = entry.partition(":")
                    name = rest.rsplit(":", 1)[0]
                    if uid.isdigit():
                        names[int(uid)] = name
        for item in parse_live_chat(data):
            if isinstance(item, LiveDanmaku) and item.sender.isdigit():
                entry = self.speakers.setdefault(int(item.sender), [names.get(int(item.sender), ""), 0])
                entry[1] += 1


class TxtExport:
    """The community's text tree (see the module docstring)."""

    def __init__(self, root: Path, *, max_open: int = MAX_OPEN_FILES) -> None:
        self.root = Path(root)
        self._days: dict[int, dict[str, _DayFile]] = {}
        self._handles = _Handles(max_open, lambda _path, handle: handle.close())
        self.lines = 0

    def opened(self, room_id: int, started_ms: int) -> None:
        pass

    def closed(self, room_id: int, started_ms: int) -> None:
        pass

    def added(self, room_id: int, started_ms: int, chat: Chat) -> None:
        if chat.super_chat:
            return
        day = self._day(room_id, chat.sent_at_ms)
        entry = day.speakers.setdefault(chat.uid, [chat.uname, 0])
        entry[1] += 1
        if not entry[0]:
            entry[0] = chat.uname
        self._write(day.path, txt_line(chat))

    def heartbeat(self, room_id: int, wall_ms: int, popularity: int) -> None:
        self._write(self._day(room_id, wall_ms).path, heartbeat_line(wall_ms, popularity))

    def flush(self) -> None:
        for handle in self._handles.files.values():
            handle.flush()

    def close(self) -> None:
        """Finish every file (summary line, ``V2``)."""
        for room_id in list(self._days):
            for name in list(self._days[room_id]):
                self._finish(room_id, name)
        for handle in self._handles.files.values():
            handle.close()
        self._handles.files.clear()

    def _day(self, room_id: int, ms: int) -> _DayFile:
        name = day_file_name(ms)
        days = self._days.setdefault(room_id, {})
        day = days.get(name)
        if day is None:
            while len(days) >= 2:  # today and yesterday (late lines around midnight) stay open
                self._finish(room_id, min(days, key=live_file_date))
            path = self.root / str(room_id) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            day = days[name] = _DayFile(path)
        return day

    def _finish(self, room_id: int, name: str) -> None:
        day = self._days[room_id].pop(name)
        self._write(day.path, speakers_line(day.speakers) + "V2\n")
        handle = self._handles.pop(day.path)
        if handle is not None:
            handle.close()

    def _write(self, path: Path, text: str) -> None:
        handle = self._handles.get(path, lambda p: open(p, "a", encoding="utf-8", newline="\n"))
        handle.write(text)
        self.lines += text.count("\n")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub("", text)


def xml_header(room_id: int, started_ms: int, short_id: int = 0) -> str:
    start = china_time(started_ms).isoformat(timespec="seconds")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<i>\n'
        "  <chatserver>chat.bilibili.com</chatserver>\n  <chatid>0</chatid>\n"
        "  <mission>0</mission>\n  <maxlimit>1000</maxlimit>\n  <state>0</state>\n"
        "  <real_name>0</real_name>\n  <source>0</source>\n"
        f'  <BililiveRecorderRecordInfo roomid="{room_id}" shortid="{short_id}" name="" title="" '
        f'areanameparent="" areanamechild="" start_time="{start}" />\n'
    )


def xml_element(chat: Chat, started_ms: int) -> str:
    """One ``<d>`` (danmaku) or ``<sc>`` (super chat) line."""
    offset = max(chat.sent_at_ms - started_ms, 0) / 1000
    user = quoteattr(_xml_text(chat.uname))
    text = escape(_xml_text(chat.text))
    if chat.super_chat:
        return (f'  <sc ts="{offset:.3f}" user={user} uid="{chat.uid}" price="{chat.price or 0}" '
                f'time="{chat.keep_s or 0}">{text}</sc>\n')
    mode = chat.mode if chat.mode is not None else 1
    size = chat.font_size if chat.font_size is not None else 25
    color = chat.color if chat.color is not None else 0xFFFFFF
    return (f'  <d p="{offset:.3f},{mode},{size},{color},{chat.sent_at_ms},0,{chat.uid},0" '
            f"user={user}>{text}</d>\n")


def xml_file_name(room_id: int, started_ms: int) -> str:
    return f"{room_id}-{china_time(started_ms).strftime('%Y%m%d-%H%M%S')}.xml"


class _XmlFile:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.tail_written = False


class XmlExport:
    """BililiveRecorder-style XML, one file per recorded source (see the module docstring)."""

    def __init__(self, root: Path, *, short_ids: dict[int, int] | None = None,
                 max_open: int = MAX_OPEN_FILES) -> None:
        self.root = Path(root)
        self.short_ids = short_ids if short_ids is not None else {}
        self._handles = _Handles(max_open, self._evict)
        self._files: dict[Path, _XmlFile] = {}
        self.elements = 0

    def opened(self, room_id: int, started_ms: int) -> None:
        self._file(room_id, started_ms)

    def added(self, room_id: int, started_ms: int, chat: Chat) -> None:
        self._write(self._file(room_id, started_ms), xml_element(chat, started_ms).encode())
        self.elements += 1

    def closed(self, room_id: int, started_ms: int) -> None:
        path = self._path(room_id, started_ms)
        if path in self._files:
            self._evict(path, self._handles.pop(path))

    def heartbeat(self, room_id: int, wall_ms: int, popularity: int) -> None:
        pass

    def flush(self) -> None:
        for path in list(self._handles.files):
            self._seal(self._files[path])

    def close(self) -> None:
        for path in list(self._handles.files):
            self._evict(path, self._handles.pop(path))

    def _path(self, room_id: int, started_ms: int) -> Path:
        return self.root / str(room_id) / xml_file_name(room_id, started_ms)

    def _file(self, room_id: int, started_ms: int) -> _XmlFile:
        path = self._path(room_id, started_ms)

        def opener(p: Path) -> IO[bytes]:
            p.parent.mkdir(parents=True, exist_ok=True)
            handle = open(p, "r+b" if p.exists() else "w+b")
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                handle.write(xml_header(room_id, started_ms, self.short_ids.get(room_id, 0)).encode())
            else:
                _drop_tail(handle)
            self._files[p] = _XmlFile(handle)
            return handle

        self._handles.get(path, opener)
        return self._files[path]

    def _write(self, file: _XmlFile, data: bytes) -> None:
        if file.tail_written:
            _drop_tail(file.handle)
            file.tail_written = False
        file.handle.write(data)

    def _seal(self, file: _XmlFile) -> None:
        if not file.tail_written:
            file.handle.write(XML_TAIL)
            file.tail_written = True
        file.handle.flush()

    def _evict(self, path: Path, handle: IO | None) -> None:
        file = self._files.pop(path, None)
        if file is not None:
            self._seal(file)
            file.handle.close()


def _drop_tail(handle: IO[bytes]) -> None:
    """Position before a trailing ``</i>`` (cut off), or at the end if there is none."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size >= len(XML_TAIL):
        handle.seek(size - len(XML_TAIL))
        if handle.read(len(XML_TAIL)) == XML_TAIL:
            handle.seek(size - len(XML_TAIL))
            handle.truncate()
            return
    handle.seek(0, os.SEEK_END)
