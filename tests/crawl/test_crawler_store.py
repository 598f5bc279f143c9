"""``add_crawled_danmaku``: crawled rows meet CSV-imported ones, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from danmaku.store.db import make_engine
from danmaku.store.models import VIDEO_PAGE, Danmaku
from danmaku.store.writes import (
    add_crawled_danmaku,
    has_unkeyed_danmaku,
    insert_danmaku,
    source_key_video,
    upsert_source,
)

CSV_ROWS = [  # (text, position_ms, sent_at_ms), as `danmaku import csv` stores them
    ("草", 1000, 1_550_000_000_000),
    ("草", 1000, 1_550_000_000_000),  # the same comment twice in the data set
    ("哈哈, 哈", 2500, 1_550_000_001_000),
    ("only in the csv", 3000, 1_550_000_002_000),
]


def crawled(dmid: int, text: str, position: int, sent: int) -> tuple:
    return (dmid, position, sent, "deadbeef", text, 1, 16777215, 25, 0)


def test_crawled_rows_fill_csv_rows_then_insert_then_skip(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        source_id, _ = upsert_source(conn, source_key_video(42, 1), VIDEO_PAGE, "csv:1/42.csv",
                                     {"aid": 42, "page": 1})
        insert_danmaku(conn, ("source_id", "text", "position_ms", "sent_at_ms"),
                       [(source_id, *row) for row in CSV_ROWS])
        assert has_unkeyed_danmaku(conn, source_id)
        csv_ids = sorted(conn.execute(select(Danmaku.id)).scalars())

    batch = [
        crawled(11, "草", 1000, 1_550_000_000_000),
        crawled(12, "草", 1000, 1_550_000_000_000),
        crawled(13, "草", 1000, 1_550_000_000_000),  # a third: no CSV row left to fill
        crawled(14, "哈哈, 哈", 2500, 1_550_000_001_000),
        crawled(15, "哈哈, 哈", 2600, 1_550_000_001_000),  # differs in position: new
        crawled(14, "哈哈, 哈", 2500, 1_550_000_001_000),  # same dmid twice in one batch
    ]
    with engine.begin() as conn:
        assert add_crawled_danmaku(conn, source_id, batch) == (2, 3, 1)
    with engine.begin() as conn:  # the same batch again: all known
        assert add_crawled_danmaku(conn, source_id, batch) == (0, 0, 6)

    with engine.connect() as conn:
        rows = conn.execute(select(Danmaku.id, Danmaku.dmid, Danmaku.text, Danmaku.sender,
                                   Danmaku.mode).order_by(Danmaku.id)).all()
    assert len(rows) == 6
    by_id = {r.id: r for r in rows}
    assert sorted(by_id[i].dmid for i in csv_ids[:3]) == [11, 12, 14]  # filled in place
    assert by_id[csv_ids[3]].dmid is None  # not (yet) seen by the crawler: kept as is
    assert all(by_id[i].sender == "deadbeef" and by_id[i].mode == 1 for i in csv_ids[:3])
    assert sorted(r.dmid for r in rows if r.id not in csv_ids) == [13, 15]
    engine.dispose()


def test_pure_crawl_source_skips_the_matching_step(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        source_id, _ = upsert_source(conn, source_key_video(7, 2), VIDEO_PAGE, "crawl:bilibili",
                                     {"aid": 7, "page": 2, "cid": 702})
        assert not has_unkeyed_danmaku(conn, source_id)
        rows = [crawled(n, f"t{n}", n, 1_550_000_000_000 + n) for n in range(1, 1201)]
        assert add_crawled_danmaku(conn, source_id, rows, match_unkeyed=False) == (1200, 0, 0)
        assert add_crawled_danmaku(conn, source_id, rows[:700] + [crawled(5000, "x", 1, 2)],
                                   match_unkeyed=True) == (1, 0, 700)
    engine.dispose()


def test_nul_in_a_crawled_text_is_stored_as_replacement_char(db_url: str) -> None:
    from danmaku.crawl.pipelines import storable

    engine = make_engine(db_url)
    row = crawled(99, "a\x00b", 5, 1_550_000_000_000)
    assert storable(row)[4] == "a\ufffdb" and storable(row)[:4] == row[:4]
    assert storable(row)[5:] == row[5:]
    with engine.begin() as conn:
        source_id, _ = upsert_source(conn, source_key_video(8, 1), VIDEO_PAGE, "crawl:bilibili")
        assert add_crawled_danmaku(conn, source_id, [storable(row)]) == (1, 0, 0)
        assert conn.execute(select(Danmaku.text)).scalar_one() == "a\ufffdb"
    engine.dispose()
