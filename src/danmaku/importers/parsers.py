"""Pure line parsers for the two public danmaku data sets.

Both take the raw bytes of one file and yield parsed records or ``BadLine``
objects; they never raise on dirty input, so an importer can count and report
what it could not read (file and line number) and go on. Formats:
``../shared/docs/data-formats.md`` §1 (video CSV) and §2 (live chat).

Files saved on Windows read the same as the originals: a leading UTF-8 BOM is
dropped, and a file whose every line ends in CRLF is read as if it ended in
LF (a lone CR inside a text -- the data set has some -- is kept). A danmaku
longer than the store's cap is a bad line (``danmaku.store.writes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from danmaku.store.writes import DEFAULT_MAX_DANMAKU_CHARS, nul_free_bytes, too_long

CHINA_UTC_OFFSET_MS = 8 * 3600 * 1000
# A text with newlines spans several physical lines. Advanced (BAS/code) danmaku
# run to thousands of lines (290 KB in the sample); a record past this size means
# the file is not this format, not a long comment.
MAX_RECORD_BYTES = 4 * 1024 * 1024

_SECONDS = re.compile(r"-?\d{1,10}(?:\.\d{1,6})?")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_UNIX_EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()
_LIVE_DANMAKU = re.compile(rb"^(\d{1,15}):(\d{1,20}):")
_LIVE_HEARTBEAT = re.compile(rb"^TIME\d{1,2}:\d{1,2}ONLINE-?\d+$")


@dataclass(frozen=True, slots=True)
class BadLine:
    """A physical line (1-based) that could not be parsed, and why."""

    line: int
    reason: str
    raw: bytes


VideoRecord = tuple[int, str, int, int]
"""One record of the video CSV data set: (first line, text, position_ms, sent_at_ms)."""


@dataclass(frozen=True, slots=True)
class LiveDanmaku:
    """One danmaku line of the live-chat data set."""

    line: int
    sent_at_ms: int
    sender: str
    text: str


_minute_ms_cache: dict[str, int] = {}
_MINUTE_CACHE_LIMIT = 1 << 20


def china_time_to_unix_ms(stamp: str) -> int:
    """UTC unix ms of ``YYYY-MM-DD HH:MM:SS`` read as China time (UTC+8, no DST).

    Danmaku of one video cluster in time, so the minute is cached (bounded).
    """
    minute_ms = _minute_ms_cache.get(stamp[:16])
    if minute_ms is None:
        h, mi = int(stamp[11:13]), int(stamp[14:16])
        if h > 23 or mi > 59:
            raise ValueError(f"time of day out of range: {stamp}")
        day = date(int(stamp[:4]), int(stamp[5:7]), int(stamp[8:10]))
        minute_ms = ((day.toordinal() - _UNIX_EPOCH_ORDINAL) * 86_400_000 - CHINA_UTC_OFFSET_MS
                     + (h * 60 + mi) * 60_000)
        if len(_minute_ms_cache) >= _MINUTE_CACHE_LIMIT:
            _minute_ms_cache.clear()
        _minute_ms_cache[stamp[:16]] = minute_ms
    s = int(stamp[17:19])
    if s > 60:
        raise ValueError(f"time of day out of range: {stamp}")
    return minute_ms + s * 1000


def seconds_to_ms(text: str) -> int:
    """'206.18800' -> 206188 (inputs have at most 6 decimals, so float is exact enough)."""
    return round(float(text) * 1000)


_BOM = b"\xef\xbb\xbf"


def normalise_file(data: bytes) -> bytes:
    """The file as the parsers read it: no BOM, LF line ends if every line ended in CRLF, no NUL."""
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    if b"\r\n" in data:
        crlf = data.count(b"\r\n")
        lines = data.count(b"\n")
        if crlf == lines:
            data = data.replace(b"\r\n", b"\n")
    return nul_free_bytes(data)


def _decode_lines(data: bytes) -> list[str | bytes]:
    """Physical lines, split at ``\\n`` only; lines that are not UTF-8 stay bytes."""
    data = normalise_file(data)
    try:
        lines: list[str | bytes] = list(data.decode("utf-8").split("\n"))
    except UnicodeDecodeError:
        lines = []
        for raw in data.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(raw)
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _tail_fields(line: str) -> tuple[str, int, int] | None:
    """(text, position_ms, sent_at_ms) if the line ends a record, else None."""
    parts = line.rsplit(",", 2)
    if len(parts) != 3:
        return None
    text, seconds, stamp = parts
    if not (_DATETIME.fullmatch(stamp) and _SECONDS.fullmatch(seconds)):
        return None
    return text, seconds_to_ms(seconds), china_time_to_unix_ms(stamp)


def parse_video_csv(data: bytes, max_chars: int = DEFAULT_MAX_DANMAKU_CHARS
                    ) -> Iterator[VideoRecord | BadLine]:
    """Records of one ``{aid}.csv`` file: ``text,video_seconds,YYYY-MM-DD HH:MM:SS``.

    Yields ``(line, text, position_ms, sent_at_ms)`` tuples (plain tuples: this
    runs millions of times) and ``BadLine`` objects, one per bad record with all
    its physical lines. The text may hold commas (the two fields are split from
    the right) and newlines: a line without the trailing fields is joined, with
    ``\\n``, to the record that ends on a following line. Only ``\\n`` ends a
    physical line; a ``\\r`` inside a text is kept as given.
    """
    pending: list[str | bytes] = []
    pending_bytes = 0
    first_line = 0
    for index, line in enumerate(_decode_lines(data), start=1):
        if not pending:
            first_line = index
        readable = line if isinstance(line, str) else line.decode("utf-8", "replace")
        try:
            fields = _tail_fields(readable)
        except ValueError as error:
            pending.append(line)
            yield BadLine(first_line, f"bad datetime: {error}", _join_raw(pending))
            pending, pending_bytes = [], 0
            continue
        if fields is None:
            pending.append(line)
            pending_bytes += len(line) + 1
            while pending_bytes > MAX_RECORD_BYTES:
                oldest = pending.pop(0)
                pending_bytes -= len(oldest) + 1
                yield BadLine(first_line, "no ',seconds,datetime' within 4 MiB", _as_bytes(oldest))
                first_line += 1
            continue
        if not isinstance(line, str) or any(isinstance(raw, bytes) for raw in pending):
            pending.append(line)
            yield BadLine(first_line, "invalid UTF-8", _join_raw(pending))
            pending, pending_bytes = [], 0
            continue
        text, position, sent_at = fields
        if pending:
            text = "\n".join([*pending, text])  # type: ignore[list-item]
            pending, pending_bytes = [], 0
        if not -(2**31) <= position < 2**31:
            raw = text.encode() + line[len(fields[0]):].encode()
            yield BadLine(first_line, "video time out of range", raw)
            continue
        if len(text) > max_chars:
            yield BadLine(first_line, too_long(text, max_chars), text[:200].encode())
            continue
        yield (first_line, text, position, sent_at)
    if pending:
        yield BadLine(first_line, "record not terminated by ',seconds,datetime' (truncated?)",
                      _join_raw(pending))


def _join_raw(lines: list[str | bytes]) -> bytes:
    return b"\n".join(_as_bytes(raw) for raw in lines)


def _as_bytes(raw: str | bytes) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


def parse_live_chat(data: bytes, max_chars: int = DEFAULT_MAX_DANMAKU_CHARS
                    ) -> Iterator[LiveDanmaku | BadLine]:
    """Danmaku of one ``{room}/{Y-M-D}.txt`` file; markers and heartbeats skipped.

    ``{unix_ms}:{uid}:{text}`` splits at the first two colons only; the text may
    contain colons and end in spaces, and is kept exactly.
    """
    data = normalise_file(data)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for index, line in enumerate(lines, start=1):
        match = _LIVE_DANMAKU.match(line)
        if match is not None:
            raw_text = line[match.end() :]
            try:
                text = raw_text.decode("utf-8")
            except UnicodeDecodeError as error:
                yield BadLine(index, f"invalid UTF-8 at byte {error.start}", line)
                continue
            if len(text) > max_chars:
                yield BadLine(index, too_long(text, max_chars), line[:200])
                continue
            yield LiveDanmaku(index, int(match.group(1)), match.group(2).decode(), text)
        elif line in (b"V2", b"") or line.startswith(b"SPEAKERNUM") or _LIVE_HEARTBEAT.match(line):
            continue
        else:
            yield BadLine(index, "not a danmaku, heartbeat, SPEAKERNUM or V2 line", line)


_LIVE_FILE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})\.txt$")


def live_file_date(name: str) -> date | None:
    """The day of a live-chat file name (``2020-3-8.txt``), None if it is not one."""
    match = _LIVE_FILE.match(name)
    if match is None:
        return None
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError:
        return None
