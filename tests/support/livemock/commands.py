"""What the chat server sends, built the way Bilibili builds it, independently of danmaku.live.

Packet framing is written here from ``../shared/docs/bilibili-api.md`` on its own
(``struct`` and the compression libraries), not imported from
``danmaku.live.protocol``, so the recorder's decoder is checked against a second
implementation. Command JSON follows the real layouts (2023-2025 captures in
public issue threads): ``DANMU_MSG`` with its 17-element ``info`` array and the
``dm_v2`` protobuf copy, ``SUPER_CHAT_MESSAGE``, ``LIVE`` with ``live_time``,
``PREPARING``, and noise: entries, gifts, a rank list whose payload is base64
protobuf (``pb``), a watched-count update.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib

import brotli

HEADER = ">IHHII"


def packet(op: int, body: bytes, ver: int = 0) -> bytes:
    return struct.pack(HEADER, 16 + len(body), 16, ver, op, 1) + body


def message(command: dict) -> bytes:
    """One op 5 packet with a JSON body, as the server lays it out (no spaces)."""
    return packet(5, json.dumps(command, ensure_ascii=False, separators=(",", ":")).encode())


def bundle(packets: list[bytes], ver: int) -> bytes:
    """One websocket message: an op 5 packet whose body is ``packets`` compressed (2 zlib, 3 brotli)."""
    raw = b"".join(packets)
    body = zlib.compress(raw) if ver == 2 else brotli.compress(raw, quality=6)  # 11 costs ms per bundle
    return packet(5, body, ver)


def auth_reply(code: int = 0) -> bytes:
    return packet(8, json.dumps({"code": code}).encode(), 1)


def heartbeat_reply(popularity: int) -> bytes:
    return packet(3, struct.pack(">I", popularity), 1)


def uid_hash(uid: int) -> str:
    return format(zlib.crc32(str(uid).encode()), "x")


def danmu_msg(sent_ms: int, uid: int, uname: str, text: str, *, rnd: int, cmd: str = "DANMU_MSG",
              masked: bool = False) -> dict:
    """A ``DANMU_MSG`` as the server sends it (masked: an anonymous connection's view)."""
    extra = {"send_from_me": False, "mode": 0, "color": 16777215, "dm_type": 0, "font_size": 25,
             "player_mode": 1, "show_player_type": 0, "content": text, "user_hash": str(uid * 7 % 10**10),
             "emoticon_unique": "", "bulge_display": 0, "recommend_score": 3, "main_state_dm_color": "",
             "objective_state_dm_color": "", "direction": 0, "pk_direction": 0, "quartet_direction": 0,
             "anniversary_crowd": 0, "yeah_space_type": "", "yeah_space_url": "", "jump_to_url": "",
             "space_type": "", "space_url": "", "animation": {}, "emots": None, "is_audited": False,
             "id_str": f"{rnd & 0xFFFFFFFF:08x}{sent_ms:x}", "icon": None, "show_reply": True,
             "reply_mid": 0, "reply_uname": "", "reply_uname_color": "", "reply_is_mystery": False,
             "hit_combo": 0}
    shown_uid = 0 if masked else uid
    shown_name = (uname[:1] + "***") if masked else uname
    meta = [0, 1, 25, 16777215, sent_ms, rnd, 0, uid_hash(uid), 0, 0, 0, "", 0, "{}", "{}",
            {"mode": 0, "show_player_type": 0, "extra": json.dumps(extra, ensure_ascii=False,
                                                                   separators=(",", ":"))},
            {"activity_identity": "", "activity_source": 0, "not_show": 0}, 0]
    medal = [21, "小星星", "主播名", 1603600, 1725515, "", 0, 6809855, 1725515, 5414290, 0, 0, 3456]
    info = [meta, text, [shown_uid, shown_name, 0, 0, 0, 10000, 1, ""], medal if not masked else [],
            [12, 0, 6406234, ">50000", 0], ["", ""], 0, 0, None,
            {"ts": sent_ms // 1000, "ct": format(rnd & 0xFFFFFFFF, "08X")}, 0, 0, None, None, 0, 105, [0]]
    return {"cmd": cmd, "info": info,
            "dm_v2": base64.b64encode(random.Random(rnd).randbytes(120)).decode()}


def super_chat(sc_id: int, sent_ms: int, uid: int, uname: str, text: str, *, price: int = 30,
               keep_s: int = 60) -> dict:
    start = sent_ms // 1000
    return {"cmd": "SUPER_CHAT_MESSAGE", "data": {
        "background_bottom_color": "#2A60B2", "background_color": "#EDF5FF", "background_image": "",
        "end_time": start + keep_s, "gift": {"gift_id": 12000, "gift_name": "醒目留言", "num": 1},
        "id": sc_id, "is_ranked": 1, "is_send_audit": 0, "medal_info": None, "message": text,
        "message_font_color": "#A3F6FF", "message_trans": "", "price": price, "rate": 1000,
        "start_time": start, "time": keep_s, "token": "E6D3D6A2", "trans_mark": 0, "ts": start,
        "uid": uid, "user_info": {"face": "", "guard_level": 0, "is_main_vip": 0, "uname": uname,
                                  "user_level": 12}}, "roomid": 0}


def live(room_id: int, live_time_s: int | None) -> dict:
    command: dict = {"cmd": "LIVE", "live_key": "471651634385218010", "voice_background": "",
                     "sub_session_key": "471651634385218010sub_time:1693030000",
                     "live_platform": "pc", "live_model": 0, "roomid": room_id}
    if live_time_s is not None:
        command["live_time"] = live_time_s
    return command


def preparing(room_id: int) -> dict:
    return {"cmd": "PREPARING", "roomid": str(room_id)}


def noise(rng: random.Random, room_id: int) -> list[dict]:
    """Commands a recorder must ignore: entries, gifts, a protobuf rank list, counters."""
    uid = rng.randrange(10**6, 10**9)
    return [
        {"cmd": "INTERACT_WORD", "data": {"uid": uid, "uname": "路人", "msg_type": 1, "roomid": room_id,
                                          "timestamp": 1693034541, "score": 1693034541000}},
        {"cmd": "SEND_GIFT", "data": {"giftName": "辣条", "num": 1, "uid": uid, "uname": "路人",
                                      "price": 100, "coin_type": "silver"}},
        {"cmd": "ONLINE_RANK_V3", "data": {"pb": base64.b64encode(rng.randbytes(80)).decode()}},
        {"cmd": "INTERACT_WORD_V2",
         "data": {"dmscore": 12, "pb": base64.b64encode(rng.randbytes(64)).decode()}},
        {"cmd": "WATCHED_CHANGE",
         "data": {"num": rng.randrange(1000), "text_small": "1", "text_large": "1人看过"}},
        {"cmd": "DANMU_AGGREGATION", "data": {"activity_identity": "", "msg": "草", "aggregation_num": 3}},
    ]


def protobuf_body() -> bytes:
    """An op 5 packet whose body is protobuf bytes, not JSON (newer commands)."""
    return packet(5, bytes.fromhex("0a0f4f4e4c494e455f52414e4b5f56331204080110021a03666f6f"))


GARBAGE = [
    b"\x00\x00\x00\x10\x00\x10",                                   # shorter than a header
    struct.pack(HEADER, 4096, 16, 0, 5, 1) + b"{}",                  # claims more bytes than sent
    struct.pack(HEADER, 40, 16, 2, 5, 1) + b"definitely not zlib data",  # ver 2, not zlib
    struct.pack(HEADER, 38, 16, 3, 5, 1) + b"\xff" * 22,             # ver 3, not brotli
    struct.pack(HEADER, 20, 8, 0, 5, 1) + b"abcd",                   # header length below 16
]
"""Websocket messages that are not this protocol: each must be dropped, the link kept."""
