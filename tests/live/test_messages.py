"""Commands kept and ignored, and the message identity that makes writes idempotent."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.live.messages import Chat, LiveEnded, LiveStarted, MessageError, chat_identity, parse_command
from tests.support.livemock import commands

# A DANMU_MSG as an anonymous connection saw it in 2023 (uid masked to 0, name to
# "折***", the uid's crc32 hash still there), from a public issue thread
# (simon300000/bilibili-live-ws#396); the two objects the thread elided are empty here.
MASKED_2023 = {"cmd": "DANMU_MSG", "info": [
    [0, 1, 25, 16777215, 1688137738344, -1938799775, 0, "e040a292", 0, 0, 0, "", 0, "{}", "{}", {}, {}, 0],
    "打雷", [0, "折***", 0, 0, 0, 10000, 1, ""], [], [0, 0, 9868950, ">50000", 0], ["", ""], 0, 0, None,
    {"ts": 1688137738, "ct": "A7DACCD7"}, 0, 0, None, None, 0, 7, [0]],
    "dm_v2": "CiI0NDdjZjdjMmM0ODA2M2UzNjE5M2JjNWFmMDY0OWVmMDY5EAEYGSD///8H"}


def body(command: dict) -> bytes:
    return json.dumps(command, ensure_ascii=False, separators=(",", ":")).encode()


def test_a_real_masked_danmaku() -> None:
    chat = parse_command(body(MASKED_2023))
    assert isinstance(chat, Chat)
    assert (chat.sent_at_ms, chat.uid, chat.uname, chat.text) == (1688137738344, 0, "折***", "打雷")
    assert (chat.mode, chat.font_size, chat.color, chat.super_chat) == (1, 25, 16777215, False)
    assert chat.identity == chat_identity("dm", 1688137738344, 0, "e040a292", -1938799775, "打雷")


def test_danmaku_and_its_suffix_variants() -> None:
    plain = commands.danmu_msg(1600000000123, 24553513, "兰子", "兰子姐晚上好", rnd=42)
    variant = commands.danmu_msg(1600000000123, 24553513, "兰子", "兰子姐晚上好", rnd=42,
                                 cmd="DANMU_MSG:4:0:2:2:2:0")
    a, b = parse_command(body(plain)), parse_command(body(variant))
    assert a == b and a.text == "兰子姐晚上好" and a.uid == 24553513 and a.uname == "兰子"
    spaced = json.dumps(plain).encode()  # key order/spacing other than the server's: full parse
    assert parse_command(spaced) == a


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.text(max_size=12), st.integers(0, 2**40), st.integers(-2**31, 2**31))
def test_any_layout_parses_alike(text: str, uname: str, uid: int, rnd: int) -> None:
    command = commands.danmu_msg(1600000000123, uid, uname, text, rnd=rnd)
    compact = body(command)  # the server's layout
    spaced = json.dumps(command).encode()  # ASCII escapes, spaces: the name is not read from bytes
    reordered = body({"cmd": "DANMU_MSG", "dm_v2": command["dm_v2"], "info": command["info"]})
    assert parse_command(compact) == parse_command(spaced) == parse_command(reordered)
    assert parse_command(compact).text == text.replace("\x00", "\ufffd")


def test_identity_is_stable_and_tells_messages_apart() -> None:
    make = commands.danmu_msg
    base = parse_command(body(make(1600000000123, 7, "u", "草", rnd=1)))
    assert parse_command(body(make(1600000000123, 7, "u", "草", rnd=1))).identity == base.identity
    others = [make(1600000000124, 7, "u", "草", rnd=1), make(1600000000123, 8, "u", "草", rnd=1),
              make(1600000000123, 7, "u", "草草", rnd=1), make(1600000000123, 7, "u", "草", rnd=2)]
    assert len({base.identity, *(parse_command(body(o)).identity for o in others)}) == 5
    # anonymous: every uid is 0, but the senders' hashes differ
    masked = [parse_command(body(make(1600000000123, uid, "u", "草", rnd=1, masked=True)))
              for uid in (7, 8)]
    assert masked[0].uid == masked[1].uid == 0 and masked[0].identity != masked[1].identity
    assert 0 <= base.identity < 2**63


def test_super_chat_is_kept_and_marked() -> None:
    sc = parse_command(body(commands.super_chat(8001, 1600000000000, 99, "老板", "晚上好！", price=50)))
    assert sc == Chat(identity=chat_identity("sc", 8001), sent_at_ms=1600000000000, uid=99, uname="老板",
                      text="晚上好！", super_chat=True, price=50, keep_s=60)


def test_live_and_preparing() -> None:
    assert parse_command(body(commands.live(5, 1600000000))) == LiveStarted(1600000000000)
    assert parse_command(body(commands.live(5, None))) == LiveStarted(None)
    assert parse_command(body(commands.preparing(5))) == LiveEnded()


def test_other_commands_and_protobuf_bodies_are_ignored_silently() -> None:
    import random

    for command in commands.noise(random.Random(3), 5):
        assert parse_command(body(command)) is None
    assert parse_command(commands.protobuf_body()[16:]) is None
    assert parse_command(b"\x0a\x03abc") is None and parse_command(b"[1,2]") is None
    assert parse_command(b'{"no_cmd":1}') is None


def test_nul_and_lone_surrogates_become_replacement_characters() -> None:
    chat = parse_command(body(commands.danmu_msg(1, 2, "a\x00b", "x\x00y", rnd=0)))
    assert chat.text == "x\ufffdy" and chat.uname == "a\ufffdb"
    raw = body(commands.danmu_msg(1, 2, "u", "TEXT", rnd=0)).replace(b"TEXT", b"a\\ud800b\\ud83d\\ude00")
    assert parse_command(raw).text == "a\ufffdb\U0001f600"  # a lone one replaced, a pair kept


@pytest.mark.parametrize("broken", [
    {"cmd": "DANMU_MSG", "info": []},
    {"cmd": "DANMU_MSG", "info": [[0, 1, 25, 16777215], "x", [1, "u"]]},
    {"cmd": "DANMU_MSG", "info": [[0, 1, 25, 16777215, "later", 0, 0, "h"], "x", [1, "u"]]},
    {"cmd": "DANMU_MSG", "info": [[0, 1, 25, 16777215, 5, 0, 0, "h"], None, [1, "u"]]},
    {"cmd": "SUPER_CHAT_MESSAGE", "data": {"id": 1, "uid": 2}},
])
def test_kept_commands_without_their_fields_raise(broken: dict) -> None:
    with pytest.raises(MessageError):
        parse_command(body(broken))
