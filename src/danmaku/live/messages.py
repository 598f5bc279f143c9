"""The op 5 commands the recorder keeps: danmaku, super chats, broadcast start and end.

``parse_command`` turns one JSON body into a ``Chat``, ``LiveStarted`` or
``LiveEnded``, or None for everything else: the server sends dozens of other
``cmd`` values (gifts, entries, rank lists, ...) and newer ones whose payload is
protobuf (a base64 ``pb`` field, or a body that is not JSON at all); those are
ignored without a word, as Bilibili adds new ones all the time. A command we do
keep but cannot read raises ``MessageError``, which the client counts.

Most bodies start ``{"cmd":"NAME"``, so the name is read from the bytes and
uninteresting commands are dropped before any JSON parsing -- in a busy room
most traffic is not danmaku. The rest is parsed with ``orjson``: a
``DANMU_MSG`` is about 1.5 KB (medals, levels, a JSON ``extra`` string, a
protobuf copy ``dm_v2``), and measured on the mock's realistic messages the
standard ``json.loads`` takes 8-10 us for one, ``JSONDecoder.raw_decode`` of
only ``info[0..2]`` 6.6 us, ``orjson.loads`` of all of it 2.7 us -- the
difference between about 60 k and over 100 k danmaku per CPU second for the
whole decode (``bench/live.py``). A body ``orjson`` refuses (lone surrogate
escapes, which the standard parser accepts) gets the standard parser.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import orjson

from danmaku.store.writes import nul_free

DANMAKU = "DANMU_MSG"
SUPER_CHAT = "SUPER_CHAT_MESSAGE"
LIVE = "LIVE"
PREPARING = "PREPARING"
_KEPT = frozenset({DANMAKU, SUPER_CHAT, LIVE, PREPARING})
_PREFIX = b'{"cmd":"'


class MessageError(ValueError):
    """A danmaku, super chat or LIVE command without the fields it must have."""


@dataclass(slots=True)
class Chat:
    """One danmaku or super chat as it is stored and exported.

    ``identity`` is what makes a write idempotent (``chat_identity``); ``uname``,
    ``price`` and ``keep_s`` go to the exports only, never to the store. Not
    frozen: a frozen dataclass takes 1.5 us to build, this one 0.25 us, and one
    is built per danmaku.
    """

    identity: int
    sent_at_ms: int
    uid: int
    uname: str
    text: str
    super_chat: bool = False
    mode: int | None = None
    font_size: int | None = None
    color: int | None = None
    price: int | None = None
    keep_s: int | None = None


@dataclass(frozen=True, slots=True)
class LiveStarted:
    """``LIVE``: the broadcast starts (``at_ms`` from its ``live_time`` when given)."""

    at_ms: int | None


@dataclass(frozen=True, slots=True)
class LiveEnded:
    """``PREPARING``: the broadcast is over (the room may show replays after it)."""


Event = Chat | LiveStarted | LiveEnded


def chat_identity(*fields: object) -> int:
    """A 63-bit id from the fields that identify one chat message (fits a signed BIGINT).

    For a danmaku: its send time in ms (``info[0][4]``), the sender's uid
    (``info[2][0]``), the crc32 hash of the sender's uid (``info[0][7]``), the
    sender client's random value (``info[0][5]``) and the text (``info[1]``).
    This is sound because the server stamps these once, when the danmaku is sent,
    and delivers the same JSON to every connection -- a reconnect, another host
    or a restarted recorder sees the same five values, so a second delivery maps
    to the same id and the store keeps one row. Two *different* danmaku would
    need the same account sending the same text in the same millisecond with
    the same random value: Bilibili lets one account post about once a second
    and refuses immediate repeats. The uid hash keeps that true on anonymous
    connections, where every uid reads 0 but the hash is still the sender's.
    A super chat has a server-side id of its own (``data.id``). With 63-bit
    ids, a collision among a million messages of one broadcast has odds of
    about 1 in 10^7.
    """
    digest = hashlib.blake2b("\x1f".join(map(str, fields)).encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _danmaku_identity(sent_at_ms: int, uid: int, uid_hash: object, rnd: object, text: str) -> int:
    """``chat_identity("dm", ...)``, formatted in one step (this runs once per danmaku)."""
    raw = f"dm\x1f{sent_at_ms}\x1f{uid}\x1f{uid_hash}\x1f{rnd}\x1f{text}"
    return int.from_bytes(hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "big") >> 1


def command_name(body: bytes) -> str | None:
    """The ``cmd`` of a body that starts ``{"cmd":"...``, without parsing the rest."""
    if body.startswith(_PREFIX):
        end = body.find(b'"', 8)
        if end > 0:
            return body[8:end].decode("utf-8", "replace")
    return None


def parse_command(body: bytes) -> Event | None:
    """The event in one op 5 JSON body, or None for commands the recorder does not keep."""
    name = command_name(body)
    if name is not None and name.split(":", 1)[0] not in _KEPT:
        return None
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            message = json.loads(body)
        except ValueError:
            return None  # protobuf or other non-JSON bodies: not ours to read
    if not isinstance(message, dict):
        return None
    cmd = message.get("cmd")
    if not isinstance(cmd, str):
        return None
    base = cmd.split(":", 1)[0]
    try:
        if base == DANMAKU:
            return _danmaku(message)
        if base == SUPER_CHAT:
            return _super_chat(message)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise MessageError(f"{base} without its fields ({type(error).__name__}: {error})") from None
    if base == LIVE:
        return LiveStarted(_live_time_ms(message.get("live_time")))
    if base == PREPARING:
        return LiveEnded()
    return None


def _clean(text: str) -> str:
    """NUL and lone surrogates cannot be stored (PostgreSQL, UTF-8): both become U+FFFD.

    NUL by the store's own rule (``danmaku.store.writes.nul_free``), as the importers do.
    """
    text = nul_free(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _danmaku(message: dict) -> Chat:
    info = message["info"]
    meta, text, user = info[0], info[1], info[2]
    if not isinstance(text, str):
        raise TypeError("info[1] is not a text")
    sent_at_ms = int(meta[4])
    uid = int(user[0])
    uid_hash = meta[7] if len(meta) > 7 else ""
    rnd = meta[5] if len(meta) > 5 else ""
    text = _clean(text)
    return Chat(_danmaku_identity(sent_at_ms, uid, uid_hash, rnd, text), sent_at_ms, uid,
                _clean(str(user[1])), text, False, _small_int(meta[1]), _small_int(meta[2]),
                _color(meta[3]))


def _super_chat(message: dict) -> Chat:
    data = message["data"]
    sent_s = data.get("start_time") or data.get("ts")
    if sent_s is None:
        raise KeyError("start_time")
    text = data["message"]
    if not isinstance(text, str):
        raise TypeError("data.message is not a text")
    user = data.get("user_info") or {}
    return Chat(
        identity=chat_identity("sc", int(data["id"])), sent_at_ms=int(sent_s) * 1000,
        uid=int(data["uid"]), uname=_clean(str(user.get("uname", ""))), text=_clean(text),
        super_chat=True, price=int(data.get("price", 0)), keep_s=int(data.get("time", 0)),
    )


def _small_int(value: object) -> int | None:
    return value if isinstance(value, int) and -32768 <= value < 32768 else None


def _color(value: object) -> int | None:
    return value if isinstance(value, int) and 0 <= value < 2**31 else None


def _live_time_ms(value: object) -> int | None:
    try:
        seconds = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds * 1000 if seconds > 0 else None
