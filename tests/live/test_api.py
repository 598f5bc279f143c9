"""The live API calls: one WBI/device code with the crawler, answers and errors, the optional login."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

import danmaku.crawl.middlewares.base_url as crawl_base_url
import danmaku.crawl.middlewares.device as crawl_device
import danmaku.crawl.middlewares.wbi as crawl_wbi
from danmaku.bilibili import base_url, device, wbi
from danmaku.live.api import Blocked, LiveApi, LiveApiError, RiskControl, parse_danmu_info, parse_room
from danmaku.store.db import make_engine
from tests.live.support import LIVE_FIXTURES, fast_options, not_broadcasting, run_recorder
from tests.support.livemock import LiveMock, build_room
from tests.support.mockbili.server import wbi_w_rid

IMG_KEY, SUB_KEY = "7cd084941338484aae1ad9425b84077c", "4932caff0ff746eab6f01bf08b70ac45"


def test_the_crawler_and_the_recorder_share_one_signing_and_cookie_code() -> None:
    assert crawl_wbi.signed_query is wbi.signed_query and crawl_wbi.mixin_key is wbi.mixin_key
    assert crawl_wbi.keys_from_nav is wbi.keys_from_nav
    assert crawl_device.sessdata_from_env is device.sessdata_from_env
    assert crawl_base_url.rebase_url is base_url.rebase_url
    # the vectors of bilibili-api.md
    key = wbi.mixin_key(IMG_KEY, SUB_KEY)
    assert key == "ea1db124af3c7062474693fa704f4ff8"
    assert wbi.signed_query({"foo": 114, "bar": 514, "zab": 1919810}, key, 1702204169).endswith(
        "w_rid=8f6f2b5b3d485fe1886cec6a0be8c5d4")


def test_get_danmu_info_signature_matches_an_independent_check() -> None:
    key = wbi.mixin_key(IMG_KEY, SUB_KEY)
    query = wbi.signed_query({"id": 1603600, "type": 0}, key, 1702204169)
    params = dict(part.split("=", 1) for part in query.split("&"))
    w_rid = params.pop("w_rid")
    assert params == {"id": "1603600", "type": "0", "wts": "1702204169"}
    assert w_rid == wbi_w_rid(params, IMG_KEY, SUB_KEY)


def test_device_cookies_from_finger() -> None:
    assert device.cookies_from_finger({"code": 0, "data": {"b_3": "B3", "b_4": "B4"}}) == {
        "buvid3": "B3", "buvid4": "B4"}
    with pytest.raises(device.DeviceCookieError):
        device.cookies_from_finger({"code": 0, "data": None})
    assert device.cookie_header({"buvid3": "B3", "SESSDATA": "s"}) == "buvid3=B3; SESSDATA=s"


def test_room_init_and_danmu_info_answers() -> None:
    room = parse_room({"code": 0, "data": {"room_id": 1603600, "short_id": 88, "uid": 5, "live_status": 1,
                                           "live_time": 1600000000}}, 88)
    assert (room.room_id, room.short_id, room.live, room.live_since_ms) == (1603600, 88, True, 1600000000000)
    assert parse_room({"code": 0, "data": {"room_id": 9, "live_status": 2}}, 9).live is False  # replays
    with pytest.raises(LiveApiError) as missing:
        parse_room({"code": 60004, "message": "直播间不存在", "data": []}, 5)
    assert missing.value.permanent
    with pytest.raises(RiskControl):
        parse_room({"code": -352, "message": "-352"}, 5)
    with pytest.raises(Blocked):
        parse_danmu_info({"code": -412, "message": "请求被拦截"}, 5, 0.0)
    info = parse_danmu_info({"code": 0, "data": {"token": "t", "host_list": []}}, 5, 0.0)
    assert info.hosts[0].host == "broadcastlv.chat.bilibili.com"  # a default when none is listed
    with pytest.raises(LiveApiError, match="unexpected"):
        parse_danmu_info({"code": 0, "data": {"host_list": []}}, 5, 0.0)


def test_http_failures_are_one_line_errors() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            api = LiveApi(session, base_url="http://127.0.0.1:9", min_interval_s=0)
            with pytest.raises(LiveApiError, match="room_init"):
                await api.room(5)

    asyncio.run(main())


def test_a_login_cookie_is_used_only_when_given_and_never_shown(tmp_path: Path) -> None:
    secret = "SESSDATA-secret-0123456789"
    room = build_room(10001030, sorted((LIVE_FIXTURES / "10001030").glob("*.txt")))
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    with LiveMock([room], sessdata=secret) as mock:
        summary, recorder = run_recorder(engine, [10001030], fast_options(mock, sessdata=secret),
                                         expect_rows=len(room.expected), settle=not_broadcasting)
    assert {a["uid"] for a in mock.auth_log} == {777}  # the logged-in user's id, from nav
    handshakes = mock.requests("/sub")
    assert handshakes and all(r["cookies"].get("SESSDATA") == secret for r in handshakes)
    assert all(r["cookies"].get("SESSDATA") == secret for r in mock.requests("getDanmuInfo"))
    assert "SESSDATA" not in mock.requests("finger/spi")[0]["cookies"]
    with engine.connect() as conn:
        dump = "\n".join(str(row) for table in ("source", "danmaku", "run")
                         for row in conn.exec_driver_sql(f"SELECT * FROM {table}"))
    assert secret not in dump and secret not in str(summary) and secret not in str(recorder.statuses())
