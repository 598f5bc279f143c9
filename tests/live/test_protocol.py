"""The packet codec against hand-built bytes, an independent encoder and broken input."""

from __future__ import annotations

import json
import zlib

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku.live.protocol import (
    MAX_BODY,
    OP_AUTH,
    OP_HEARTBEAT,
    OP_MESSAGE,
    Packet,
    ProtocolError,
    auth_code,
    auth_packet,
    compress_packets,
    encode_packet,
    heartbeat_packet,
    iter_packets,
    popularity,
)
from tests.support.livemock import commands

# A heartbeat as the web client sends it, written out field by field:
# length 31, header 16, version 1, op 2, sequence 1, then "[object Object]".
HEARTBEAT = bytes.fromhex("0000001f" "0010" "0001" "00000002" "00000001") + b"[object Object]"
# The server's answer: op 3, version 1, popularity 0x00012d87 = 77191.
HEARTBEAT_REPLY = bytes.fromhex("00000014" "0010" "0001" "00000003" "00000001" "00012d87")
LIVE_JSON = b'{"cmd":"LIVE","roomid":1603600}'
LIVE_PACKET = bytes.fromhex("0000002f" "0010" "0000" "00000005" "00000001") + LIVE_JSON


def test_heartbeat_and_its_reply_match_the_hand_built_bytes() -> None:
    assert heartbeat_packet() == HEARTBEAT
    [reply] = iter_packets(HEARTBEAT_REPLY)
    assert reply == Packet(3, 1, bytes.fromhex("00012d87"))
    assert popularity(reply.body) == 77191
    assert popularity(b"\x00") is None


def test_a_plain_json_message() -> None:
    assert len(LIVE_PACKET) == 0x2F
    assert list(iter_packets(LIVE_PACKET)) == [Packet(OP_MESSAGE, 0, LIVE_JSON)]
    assert encode_packet(OP_MESSAGE, LIVE_JSON, 0) == LIVE_PACKET


def test_auth_packet_fields() -> None:
    data = auth_packet(1603600, "tok==", "BUVID3-infoc", uid=0)
    [packet] = iter_packets(data)
    assert (packet.op, packet.ver) == (OP_AUTH, 1)
    assert data[:4] == len(data).to_bytes(4, "big") and data[4:6] == b"\x00\x10"
    assert json.loads(packet.body) == {"uid": 0, "roomid": 1603600, "protover": 3, "buvid": "BUVID3-infoc",
                                       "platform": "web", "type": 2, "key": "tok=="}


@pytest.mark.parametrize(("ver", "compress"), [(2, zlib.compress), (3, brotli.compress)])
def test_compressed_bodies_hold_several_packets(ver: int, compress) -> None:
    inner = LIVE_PACKET + HEARTBEAT_REPLY + LIVE_PACKET.replace(b"1603600", b"7777777")
    body = compress(inner)
    outer = bytes.fromhex(f"{16 + len(body):08x}" "0010" f"{ver:04x}" "00000005" "00000001") + body
    packets = list(iter_packets(outer))
    assert [p.op for p in packets] == [5, 3, 5]
    assert packets[0].body == LIVE_JSON and b"7777777" in packets[2].body
    assert list(iter_packets(compress_packets(inner, ver))) == packets


def test_several_top_level_packets_in_one_message_and_mixed_versions() -> None:
    zipped = commands.bundle([commands.message({"cmd": "A"}), commands.message({"cmd": "B"})], 2)
    brotlied = commands.bundle([commands.message({"cmd": "C"})], 3)
    data = HEARTBEAT_REPLY + zipped + LIVE_PACKET + brotlied
    assert [json.loads(p.body)["cmd"] if p.op == 5 else p.op for p in iter_packets(data)] == [
        3, "A", "B", "LIVE", "C"]


def test_auth_reply_codes() -> None:
    assert auth_code(commands.auth_reply(0)[16:]) == 0
    assert auth_code(commands.auth_reply(-101)[16:]) == -101
    assert auth_code(b"not json") is None and auth_code(b"[1]") is None


@pytest.mark.parametrize("garbage", commands.GARBAGE)
def test_garbage_frames_raise_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        list(iter_packets(garbage))


def test_a_compressed_packet_inside_a_compressed_packet_is_refused() -> None:
    nested = compress_packets(compress_packets(LIVE_PACKET, 3), 2)
    with pytest.raises(ProtocolError, match="inside"):
        list(iter_packets(nested))


@pytest.mark.parametrize("ver", [2, 3])
def test_a_body_that_expands_beyond_the_limit_is_refused(ver: int) -> None:
    big = b"\x00" * (MAX_BODY + 1024)
    body = zlib.compress(big, 1) if ver == 2 else brotli.compress(big, quality=1)
    assert len(body) < 100_000
    with pytest.raises(ProtocolError, match="beyond"):
        list(iter_packets(encode_packet(OP_MESSAGE, body, ver)))


def test_truncated_brotli_is_refused() -> None:
    body = brotli.compress(LIVE_PACKET * 50)
    with pytest.raises(ProtocolError):
        list(iter_packets(encode_packet(OP_MESSAGE, body[: len(body) // 2], 3)))


@given(st.lists(st.tuples(st.sampled_from([OP_HEARTBEAT, 3, OP_MESSAGE, OP_AUTH, 8]),
                          st.binary(max_size=300)), max_size=8),
       st.sampled_from([None, 2, 3]))
def test_round_trip_against_the_independent_encoder(items, ver) -> None:
    raw = b"".join(commands.packet(op, body, 1 if op != OP_MESSAGE else 0) for op, body in items)
    data = raw if ver is None else commands.bundle([raw], ver)
    assert [(p.op, p.body) for p in iter_packets(data)] == [(op, body) for op, body in items]
