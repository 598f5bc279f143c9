"""The crawler's pure parts against hand-checked vectors and independent encoders."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku.crawl import api
from danmaku.crawl.bvid import MAX_AID, av_to_bv, bv_to_av
from danmaku.crawl.danmaku import (
    DecodeError,
    SegmentLayout,
    decode_segment,
    decode_view,
    parse_xml,
    segment_count,
)
from danmaku.crawl.middlewares.base_url import rebase_url
from danmaku.crawl.middlewares.wbi import (
    WbiKeyError,
    keys_from_nav,
    mixin_key,
    sign_url,
    signed_query,
)
from danmaku.crawl.targets import TargetError, parse_targets, read_list_file, video_id
from tests.conftest import REPO, SHARED_DATA
from tests.support.mockbili.catalog import Catalog
from tests.support.mockbili.server import UNKNOWN_FIELDS, segment_body, view_reply_body, wbi_w_rid, xml_body

# -- BV <-> av (pairs from bilibili-api.md) ----------------------------------------------------

BV_PAIRS = [(170001, "BV17x411w7KC"), (53711561, "BV154411x7XP"),
            (111298867365120, "BV1L9Uoa9EUx")]


@pytest.mark.parametrize(("aid", "bvid"), BV_PAIRS)
def test_bv_av_vectors(aid: int, bvid: str) -> None:
    assert av_to_bv(aid) == bvid
    assert bv_to_av(bvid) == aid


@given(st.integers(min_value=1, max_value=MAX_AID - 1))
def test_bv_av_round_trip(aid: int) -> None:
    assert bv_to_av(av_to_bv(aid)) == aid


@pytest.mark.parametrize("bad", ["BV17x411w7K", "AV17x411w7KC", "BV17x411w7K0", "BV1" + "F" * 9])
def test_bv_rejects_non_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        bv_to_av(bad)


# -- WBI (vectors from bilibili-api.md) --------------------------------------------------------

IMG_KEY, SUB_KEY = "7cd084941338484aae1ad9425b84077c", "4932caff0ff746eab6f01bf08b70ac45"
MIXIN = "ea1db124af3c7062474693fa704f4ff8"


def test_mixin_key_vector() -> None:
    assert mixin_key(IMG_KEY, SUB_KEY) == MIXIN


def test_signed_query_vectors() -> None:
    assert signed_query({"foo": 114, "bar": 514, "zab": 1919810}, MIXIN, 1702204169) == (
        "bar=514&foo=114&wts=1702204169&zab=1919810&w_rid=8f6f2b5b3d485fe1886cec6a0be8c5d4")
    assert signed_query({"oid": 123, "type": 1, "segment_index": 1, "q": "a b(c)"}, MIXIN,
                        1702204169) == ("oid=123&q=a%20bc&segment_index=1&type=1&wts=1702204169"
                                        "&w_rid=ea82f94a7a49b6e5499922570f9a24ae")


def test_sign_url_replaces_an_old_signature_and_matches_the_mock_check() -> None:
    url = api.space_url(349991143, 2) + "&wts=1&w_rid=stale"
    signed = sign_url(url, MIXIN, 1702204169)
    query = dict(p.split("=", 1) for p in signed.split("?", 1)[1].split("&"))
    assert query["wts"] == "1702204169" and query["w_rid"] != "stale"
    w_rid = query.pop("w_rid")
    assert w_rid == wbi_w_rid(query, IMG_KEY, SUB_KEY)  # the mock's own implementation


def test_keys_from_nav() -> None:
    nav = {"code": -101, "data": {"wbi_img": {
        "img_url": f"https://i0.hdslb.com/bfs/wbi/{IMG_KEY}.png",
        "sub_url": f"https://i0.hdslb.com/bfs/wbi/{SUB_KEY}.png"}}}
    assert keys_from_nav(nav) == (IMG_KEY, SUB_KEY)
    with pytest.raises(WbiKeyError):
        keys_from_nav({"code": -101, "data": {}})


# -- protobuf and XML bodies --------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_fixture()


def _rows(danmaku) -> list[tuple]:
    return [(d.dmid, d.position_ms, d.sent_at_ms, d.sender, d.text, d.mode, d.color, d.font_size,
             d.pool) for d in danmaku]


def test_segment_decodes_real_rows_and_skips_unknown_fields(catalog: Catalog) -> None:
    page = catalog.videos[14034551].pages[0]  # int32 overflow and negative video times
    body = segment_body(page.danmaku)
    assert body.count(UNKNOWN_FIELDS) == len(page.danmaku)
    assert decode_segment(body) == _rows(page.danmaku)
    multi_line = catalog.videos[37620532].pages[0].danmaku
    assert any("\n" in d.text for d in multi_line)
    assert decode_segment(segment_body(multi_line)) == _rows(multi_line)


def test_empty_and_broken_segments() -> None:
    assert decode_segment(b"") == []
    with pytest.raises(DecodeError):
        decode_segment(b"\x0a\xff\xff\xff\xff\x0f")


def test_view_reply_and_segment_count(catalog: Catalog) -> None:
    page = catalog.videos[51364753].pages[0]
    layout = decode_view(view_reply_body(page))  # carries an unknown player-settings field
    assert layout == SegmentLayout(closed=False, segments=page.segments, segment_ms=360_000,
                                   count=len(page.danmaku))
    assert segment_count(layout, page.duration_s) == 11
    assert segment_count(None, 3740) == 11  # ceil(3740 / 360)
    assert segment_count(None, 360) == 1 and segment_count(None, 361) == 2
    assert segment_count(None, None) == 1
    implausible = SegmentLayout(closed=False, segments=10_000, segment_ms=360_000, count=0)
    assert segment_count(implausible, 3740) == 11


def test_xml_list_gives_the_same_rows(catalog: Catalog) -> None:
    page = catalog.videos[17999430].pages[0]  # texts with only ideographic spaces
    xml = zlib.decompress(xml_body(page), -15)
    assert sorted(parse_xml(xml)) == sorted(_rows(page.danmaku))
    negative = catalog.videos[14034551].pages[0]
    assert sorted(parse_xml(zlib.decompress(xml_body(negative), -15))) == sorted(
        _rows(negative.danmaku))


def test_truncated_xml_is_an_error_not_a_short_list(catalog: Catalog) -> None:
    xml = zlib.decompress(xml_body(catalog.videos[17999430].pages[0]), -15)
    with pytest.raises(ValueError):
        parse_xml(xml[: len(xml) // 2])
    with pytest.raises(ValueError):
        parse_xml(b'{"code":-404}')


def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    proto_dir = REPO / "src" / "danmaku" / "crawl" / "proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
                    f"--python_out={tmp_path}", str(proto_dir / "dm.proto")], check=True)
    fresh = (tmp_path / "dm_pb2.py").read_text()
    checked_in = (proto_dir / "dm_pb2.py").read_text()

    def body(text: str) -> list[str]:  # the protoc version line may differ
        return [line for line in text.splitlines() if not line.startswith("# Protobuf Python")]

    assert body(fresh) == body(checked_in), "regenerate src/danmaku/crawl/proto/dm_pb2.py (see dm.proto)"


# -- targets ----------------------------------------------------------------------------------


def test_study_list_file_is_read_in_order() -> None:
    path = SHARED_DATA / "av_data_list.txt"
    if not path.exists():
        pytest.skip("shared data not available")
    aids = list(read_list_file(path))
    first_line = path.read_text().splitlines()[0]
    assert aids[:3] == [53711561, 53711826, 52937004]
    assert len(aids) == sum(line.count(",") + 1 for line in path.read_text().splitlines()
                            if line.strip())
    assert first_line.startswith("[53711561,")


def test_targets_mix_forms_and_drop_repeats(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# mine\n[170001, 53711561]\n\nav111298867365120\nBV17x411w7KC\n")
    targets = parse_targets(bvid="BV154411x7XP", aid="170001, av42", mid="349991143,1",
                            list_path=str(listing))
    assert targets.aids == [53711561, 170001, 42, 111298867365120]
    assert targets.mids == [349991143, 1]


def test_bad_targets_name_file_and_line(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("[1, 2]\n[3, 'x']\n")
    with pytest.raises(TargetError, match=r"list.txt:2:"):
        parse_targets(list_path=str(listing))
    with pytest.raises(TargetError):
        video_id("av-3")
    with pytest.raises(TargetError):
        parse_targets(bvid="170001")
    with pytest.raises(TargetError):
        parse_targets(mid="abc")
    with pytest.raises(TargetError, match="not found"):
        parse_targets(list_path=str(tmp_path / "missing.txt"))


# -- base URL -----------------------------------------------------------------------------------


def test_rebase_keeps_path_and_query_for_every_host() -> None:
    base = "http://127.0.0.1:8765"
    assert rebase_url(api.segment_url(5, 6, 7), base) == (
        "http://127.0.0.1:8765/x/v2/dm/web/seg.so?type=1&oid=5&pid=6&segment_index=7")
    assert rebase_url("https://comment.bilibili.com/123.xml", base) == "http://127.0.0.1:8765/123.xml"
    assert rebase_url(f"{base}/x/web-interface/nav", base) == f"{base}/x/web-interface/nav"
    prefixed = rebase_url("https://api.bilibili.com/x/a?b=1", "https://proxy.example/bili/")
    assert prefixed == "https://proxy.example/bili/x/a?b=1"
    assert rebase_url(prefixed, "https://proxy.example/bili/") == prefixed


# -- error answers -------------------------------------------------------------------------------


def _response(body: bytes, content_type: str, status: int = 200):
    from scrapy.http import Request, Response

    url = "https://api.bilibili.com/x"
    return Response(url, status=status, body=body, headers={"Content-Type": content_type},
                    request=Request(url))


def test_json_is_told_from_protobuf_by_type_and_first_byte(catalog: Catalog) -> None:
    from dataclasses import replace

    from danmaku.crawl.middlewares.errors import NOT_JSON, UNDECODABLE, json_payload

    # A segment whose first element is 123 bytes long starts b"\n{" -- "\n" then "{".
    first = catalog.videos[17999430].pages[0].danmaku[0]
    size = len(segment_body([first])) - 2
    body = segment_body([replace(first, text=first.text + "x" * (123 - size))])
    assert body[:2] == b"\n{"
    assert json_payload(_response(body, "application/octet-stream")) is NOT_JSON
    assert len(decode_segment(body)) == 1
    assert json_payload(_response(b'{"code":-352}', "application/json")) == {"code": -352}
    assert json_payload(_response(b'{"code":-35', "text/plain")) is UNDECODABLE


def test_back_off_doubles_and_is_bounded() -> None:
    from scrapy.utils.test import get_crawler

    from danmaku.crawl.middlewares.errors import BilibiliErrorsMiddleware

    crawler = get_crawler(settings_dict={"DANMAKU_BACKOFF_BASE": 10, "DANMAKU_BLOCKED_BACKOFF_BASE": 60,
                                         "DANMAKU_BACKOFF_MAX": 1800, "DANMAKU_BACKOFF_JITTER": 0.25})
    middleware = BilibiliErrorsMiddleware(crawler)
    for attempt, expected in enumerate([10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800]):
        delay = middleware.delay_for(attempt, blocked=False)
        assert expected <= delay <= expected * 1.25
    assert 60 <= middleware.delay_for(0, blocked=True) <= 75
    assert middleware.delay_for(20, blocked=True) <= 1800 * 1.25
