"""The chat server's packet framing: a 16-byte header, then a body (JSON, zlib or brotli).

Every websocket binary message holds one or more packets. A header is five
big-endian fields: total length (u32, header included), header length (u16, 16),
protocol version (u16), operation (u32) and sequence (u32, 1). Bodies by version:
0 JSON, 1 a heartbeat payload (op 3 answers with the room's popularity, a u32),
2 zlib- and 3 brotli-compressed *packets* -- a compressed body is itself a run
of packets with their own headers, which ``iter_packets`` unpacks. Facts:
``../shared/docs/bilibili-api.md``, "Live chat".

Pure functions over bytes, used by the client, the mock server in tests and
``bench/live.py``. A compressed body may expand to at most ``MAX_BODY`` bytes (a
malicious or broken server must not exhaust memory); nesting deeper than one
compressed level is refused for the same reason.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import brotli

HEADER = struct.Struct(">IHHII")
HEADER_SIZE = HEADER.size  # 16

OP_HEARTBEAT = 2
OP_HEARTBEAT_REPLY = 3
OP_MESSAGE = 5
OP_AUTH = 7
OP_AUTH_REPLY = 8

VER_JSON = 0
VER_HEARTBEAT = 1
VER_ZLIB = 2
VER_BROTLI = 3

PROTOVER = VER_BROTLI
"""The version the recorder asks for in its auth packet (the web client's choice)."""
MAX_BODY = 16 * 1024 * 1024
"""The largest decompressed body accepted (real ones are a few KB to a few hundred KB)."""
HEARTBEAT_BODY = b"[object Object]"
"""What the web client sends as the heartbeat body (the server ignores it)."""


class ProtocolError(ValueError):
    """Bytes that are not packets of this protocol (the message is dropped, the link kept)."""


class Packet(NamedTuple):
    """One uncompressed packet: its operation, the version it came in, its body."""

    op: int
    ver: int
    body: bytes


def encode_packet(op: int, body: bytes = b"", ver: int = VER_HEARTBEAT, sequence: int = 1) -> bytes:
    """One packet: the header for ``body``, then ``body`` (sent as given, not compressed)."""
    return HEADER.pack(HEADER_SIZE + len(body), HEADER_SIZE, ver, op, sequence) + body


def auth_packet(room_id: int, token: str, buvid3: str | None, uid: int = 0) -> bytes:
    """The op 7 packet the server expects first: who we are and which room (JSON body)."""
    body = {"uid": uid, "roomid": room_id, "protover": PROTOVER, "platform": "web", "type": 2,
            "key": token}
    if buvid3:
        body["buvid"] = buvid3
    return encode_packet(OP_AUTH, json.dumps(body, separators=(",", ":")).encode(), VER_HEARTBEAT)


def heartbeat_packet() -> bytes:
    """The op 2 packet sent every 30 s; the server answers op 3 with the popularity figure."""
    return encode_packet(OP_HEARTBEAT, HEARTBEAT_BODY, VER_HEARTBEAT)


def compress_packets(packets: bytes, ver: int, op: int = OP_MESSAGE) -> bytes:
    """A packet whose body is ``packets`` (already framed) compressed with zlib (2) or brotli (3)."""
    if ver == VER_ZLIB:
        body = zlib.compress(packets)
    elif ver == VER_BROTLI:
        body = brotli.compress(packets)
    else:
        raise ValueError(f"not a compressed protocol version: {ver}")
    return encode_packet(op, body, ver)


def iter_packets(data: bytes) -> Iterator[Packet]:
    """Every uncompressed packet in one websocket message, compressed bodies unpacked in order."""
    for op, ver, body in _frames(data):
        if ver in (VER_ZLIB, VER_BROTLI) and op == OP_MESSAGE:
            for inner in _frames(decompress(ver, body)):
                if inner[1] in (VER_ZLIB, VER_BROTLI):
                    raise ProtocolError("compressed packet inside a compressed packet")
                yield Packet(*inner)
        else:
            yield Packet(op, ver, body)


def _frames(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(op, ver, body) of each packet laid end to end in ``data`` (no decompression)."""
    offset = 0
    size = len(data)
    unpack = HEADER.unpack_from
    while offset < size:
        if size - offset < HEADER_SIZE:
            raise ProtocolError(f"{size - offset} trailing bytes: shorter than a header")
        total, header, ver, op, _ = unpack(data, offset)
        if header < HEADER_SIZE or total < header or offset + total > size:
            raise ProtocolError(f"bad header at byte {offset}: length {total}, header {header}, "
                                f"{size - offset} bytes left")
        yield op, ver, data[offset + header: offset + total]
        offset += total


def decompress(ver: int, body: bytes) -> bytes:
    """A compressed body's packets; ProtocolError when it does not decode or is too large."""
    try:
        if ver == VER_ZLIB:
            inflater = zlib.decompressobj()
            out = inflater.decompress(body, MAX_BODY)
            if inflater.unconsumed_tail:
                raise ProtocolError(f"zlib body expands beyond {MAX_BODY} bytes")
            return out
        # output_buffer_limit is a soft cap (brotli grows its buffer in steps), so count too.
        decompressor = brotli.Decompressor()
        parts = [decompressor.process(body, output_buffer_limit=MAX_BODY)]
        size = len(parts[0])
        while size <= MAX_BODY and not decompressor.is_finished():
            if decompressor.can_accept_more_data():
                raise ProtocolError("brotli body truncated")
            parts.append(decompressor.process(b"", output_buffer_limit=MAX_BODY))
            size += len(parts[-1])
        if size > MAX_BODY:
            raise ProtocolError(f"brotli body expands beyond {MAX_BODY} bytes")
        return parts[0] if len(parts) == 1 else b"".join(parts)
    except (zlib.error, brotli.error) as error:
        raise ProtocolError(f"{'zlib' if ver == VER_ZLIB else 'brotli'} body does not decode: "
                            f"{error}") from None


def popularity(body: bytes) -> int | None:
    """The op 3 heartbeat reply's figure (u32 big-endian), None if the body is not one."""
    return int.from_bytes(body[:4], "big") if len(body) >= 4 else None


def auth_code(body: bytes) -> int | None:
    """The ``code`` of an op 8 auth reply (0: accepted, -101: token refused), None if unreadable."""
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None
