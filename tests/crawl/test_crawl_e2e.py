"""``scrapy crawl bilibili_danmaku`` end to end, as a user runs it, against tests/mockbili.

Each test starts the real command (a subprocess from the repository root, the
mock reached through ``DANMAKU_BILIBILI_BASE_URL``, throttling off) and compares the
store with what the mock serves -- real rows of the CSV data set -- exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.crawl.bvid import av_to_bv
from danmaku.importers.video_csv import import_video_csv
from danmaku.store.db import make_engine
from tests.support.mockbili import Catalog, Fault, MockBilibili
from tests.support.mockbili.catalog import FIXTURE
from tests.support.mockbili.run import (
    REPO,
    crawl_env,
    crawl_runs,
    run_crawl,
    start_crawl,
    stored_danmaku,
    stored_sources,
)

ALL_VIDEOS = {
    "mid": "349991143",  # five videos, listed two per page: three signed listing pages
    "bvid": av_to_bv(14034551),  # two pages (cids)
    "aid": "av51364753,53927818",  # 53927818 is gone
}


def all_args(tmp_path: Path) -> dict[str, str]:
    listing = tmp_path / "av_data_list.txt"  # the study's format
    listing.write_text("[17999430, 51364753]\n[53927818]\n")
    return {**ALL_VIDEOS, "list": str(listing)}


def total_segments(catalog: Catalog) -> int:
    return sum(p.segments for v in catalog.videos.values() for p in v.pages)


def last_stats(db_url: str) -> dict:
    return json.loads(crawl_runs(db_url)[-1]["stats_json"])


def check_ok(done) -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]


def test_crawl_stores_exactly_the_source_data(db_url: str, mock: MockBilibili,
                                              catalog: Catalog, tmp_path: Path) -> None:
    done = run_crawl(mock.url, db_url, all_args(tmp_path))
    check_ok(done)
    expected = catalog.expected_danmaku()
    assert stored_danmaku(db_url) == expected
    wanted = catalog.expected_sources()
    sources = stored_sources(db_url)
    assert {key: {f: row[f] for f in wanted[key]} for key, row in sources.items()} == wanted

    run = crawl_runs(db_url)[-1]
    stats = json.loads(run["stats_json"])
    assert run["status"] == "done"
    assert (stats["videos"], stats["pages"], stats["pages_new"]) == (8, 9, 9)
    assert stats["segments"] == total_segments(catalog) and stats["xml_lists"] == 0
    assert stats["danmaku_new"] == len(expected) == run["rows"]
    assert (stats["gone"], stats["failed"], stats["fallbacks"]) == (1, 0, 0)
    assert any("av53927818" in p for p in stats["problems"])

    assert len(mock.requests("/x/space/wbi/arc/search")) == 3
    for entry in mock.requests("/x/v2/dm/"):
        assert entry["cookies"] == ["buvid3", "buvid4"], entry  # device cookies, no login
    assert len(mock.requests("/x/web-interface/nav")) == 1  # WBI keys cached
    assert len(mock.requests("/x/frontend/finger/spi")) == 1

    again = run_crawl(mock.url, db_url, all_args(tmp_path))  # re-crawl: only new danmaku
    check_ok(again)
    assert stored_danmaku(db_url) == expected
    stats = last_stats(db_url)
    assert (stats["danmaku_new"], stats["danmaku_known"]) == (0, len(expected))
    assert stats["pages_merged"] == 9

    status = CliRunner().invoke(app, ["crawl", "status", "--db", db_url, "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert [r["status"] for r in report["runs"]] == ["done", "done"]
    assert report["totals"]["danmaku_new"] == len(expected)
    assert report["totals"]["segments"] == 2 * total_segments(catalog)
    assert report["store"] == {"crawled_pages": 9, "gone_pages": 0,
                               "danmaku_with_dmid": len(expected)}
    table = CliRunner().invoke(app, ["crawl", "status", "--db", db_url])
    assert table.exit_code == 0 and "danmaku new" in table.stdout


def test_faults_are_survived(sqlite_url: str, catalog: Catalog, tmp_path: Path) -> None:
    seg = r"/x/v2/dm/web/seg\.so\?type=1&oid={}&pid=\d+&segment_index={}$"
    faults = [
        Fault(r"/view\?aid=49543438", "http412"),
        Fault(r"/view\?aid=32024193", "corrupt"),  # truncated JSON with a valid length
        Fault(seg.format(5136475301, 1), "truncate"),  # connection lost mid-body
        Fault(seg.format(5136475301, 2), "code-352"),
        Fault(seg.format(5136475301, 3), "code-412"),
        Fault(seg.format(5136475301, 4), "http503"),
        Fault(seg.format(5136475301, 5), "timeout", seconds=2.5),
        Fault(seg.format(3762053201, 1), "corrupt"),  # once: a retry gets it
        Fault(seg.format(1799943001, 1), "corrupt", times=-1),  # always: the XML list
        Fault(r"/x/v2/dm/web/view\?type=1&oid=3762053201", "corrupt", times=-1),  # duration
    ]
    with MockBilibili(catalog, space_page_size=2, rotate_wbi_after=1) as mock:
        mock.add_faults(*faults)
        done = run_crawl(mock.url, sqlite_url, all_args(tmp_path))
        log = list(mock.log)
    check_ok(done)
    assert stored_danmaku(sqlite_url) == catalog.expected_danmaku()
    stats = last_stats(sqlite_url)
    assert (stats["failed"], stats["fallbacks"], stats["xml_lists"]) == (0, 1, 1)
    assert "backing off" in done.stderr and "code -352" in done.stderr
    assert all(f.times in (0, -1) for f in faults), "every fault was served"
    for fault in faults:
        served = [e for e in log if _matches(fault.path, e)]
        assert len(served) >= 2, fault  # answered wrongly once, then tried again
    assert sum(1 for e in log if e["path"] == "/x/web-interface/nav") == 2  # keys rotated
    assert sum(1 for e in log if e["path"] == "/x/v1/dm/list.so") == 1


def _matches(pattern: str, entry: dict) -> bool:
    return re.search(pattern, f"{entry['path']}?{entry['query']}") is not None


def test_hopeless_requests_are_recorded_not_fatal(sqlite_url: str, catalog: Catalog) -> None:
    with MockBilibili(catalog) as mock:
        mock.add_faults(
            Fault(r"/view\?aid=49543438", "http412", times=-1),
            Fault(r"seg\.so\?type=1&oid=3202419301&", "code62002", times=-1),
            Fault(r"seg\.so\?type=1&oid=2770269901&pid=\d+&segment_index=34$", "truncate",
                  times=-1),
            Fault(r"/view\?aid=27702699", "code-352", times=3),  # 3 x -352: new device cookies
        )
        done = run_crawl(mock.url, sqlite_url, {"aid": "49543438,32024193,27702699"},
                         settings={"DANMAKU_BACKOFF_RETRIES": "4"})
        finger_calls = len(mock.requests("/x/frontend/finger/spi"))
    check_ok(done)
    assert finger_calls == 2
    assert stored_danmaku(sqlite_url) == catalog.expected_danmaku({27702699})  # 32024193: gone
    stats = last_stats(sqlite_url)
    assert (stats["failed"], stats["gone"], stats["fallbacks"]) == (1, 1, 1)
    assert stored_sources(sqlite_url)["video:32024193:1"]["status"] == "gone"
    assert "video:49543438:1" not in stored_sources(sqlite_url)


def test_crawl_merges_with_the_csv_import(db_url: str, mock: MockBilibili, catalog: Catalog,
                                          tmp_path: Path) -> None:
    tree = tmp_path / "video_danmaku"
    shutil.copytree(FIXTURE / "csv", tree)
    csv_file = tree / "2149710" / "17999430.csv"
    first_line = csv_file.read_text(encoding="utf-8").splitlines()[0]
    with csv_file.open("a", encoding="utf-8") as out:  # rows Bilibili no longer serves
        out.write(first_line + "\n" + "已删除的弹幕,12.50000,2019-01-01 12:00:00\n")
    # A video of the data set that is gone from Bilibili (real rows of another file).
    shutil.copy(tree / "349991143" / "27702699.csv", tree / "349991143" / "53927818.csv")
    engine = make_engine(db_url)
    imported = import_video_csv(engine, tree, workers=1)
    engine.dispose()
    assert imported.rejected == 0
    before = stored_sources(db_url)
    assert all(s["cid"] is None for s in before.values())

    check_ok(run_crawl(mock.url, db_url, all_args(tmp_path)))

    expected = catalog.expected_danmaku()
    stored = stored_danmaku(db_url)
    unkeyed = [row for row in stored if row[1] is None]
    gone_rows = len(catalog.videos[27702699].pages[0].danmaku)
    assert len([r for r in unkeyed if r[0] == "video:53927818:1"]) == gone_rows  # kept
    assert sorted(r[5] for r in unkeyed if r[0] != "video:53927818:1") == sorted(
        [first_line.rsplit(",", 2)[0], "已删除的弹幕"])
    assert [row for row in stored if row[1] is not None] == expected  # no duplicates
    after = stored_sources(db_url)
    assert set(after) == set(before) | {"video:14034551:2"}
    assert after["video:53927818:1"]["status"] == "gone"
    wanted = catalog.expected_sources()
    for key, row in after.items():
        if key == "video:53927818:1":
            continue
        assert {f: row[f] for f in wanted[key]} == wanted[key]
        assert row["origin"] == before.get(key, {"origin": "crawl:bilibili"})["origin"]
    stats = last_stats(db_url)
    page_two = len(catalog.videos[14034551].pages[1].danmaku)
    assert (stats["pages_merged"], stats["pages_new"]) == (8, 1)
    assert stats["danmaku_new"] == page_two
    assert stats["danmaku_filled"] == len(expected) - page_two == imported.rows - 2 - gone_rows


def test_kill_and_resume_with_jobdir(sqlite_url: str, mock: MockBilibili, catalog: Catalog,
                                     tmp_path: Path) -> None:
    jobdir = tmp_path / "job"
    slow = {"JOBDIR": str(jobdir), "DOWNLOAD_DELAY": "0.08", "DOWNLOAD_DELAY_JITTER": "0",
            "CONCURRENT_REQUESTS_PER_DOMAIN": "1", "DANMAKU_FLUSH_SECONDS": "0"}
    first = start_crawl(mock.url, sqlite_url, all_args(tmp_path), tmp_path / "first.log",
                        settings=slow)
    try:
        deadline = time.monotonic() + 60
        while len(mock.requests("seg.so")) < 25 and first.poll() is None:
            assert time.monotonic() < deadline, "crawl made no progress"
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)  # Ctrl-C: finish what is in flight, keep the queue
        assert first.wait(60) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    partial = stored_danmaku(sqlite_url)
    segments_first = len(mock.requests("seg.so"))
    assert crawl_runs(sqlite_url)[-1]["status"] == "interrupted"
    assert 0 < len(partial) < len(catalog.expected_danmaku())
    assert segments_first < total_segments(catalog)

    second = run_crawl(mock.url, sqlite_url, all_args(tmp_path),
                       settings={"JOBDIR": str(jobdir)})
    check_ok(second)
    assert "Resuming crawl" in second.stderr
    assert stored_danmaku(sqlite_url) == catalog.expected_danmaku()
    assert len(mock.requests("seg.so")) == total_segments(catalog)  # none fetched twice
    assert [r["status"] for r in crawl_runs(sqlite_url)] == ["interrupted", "done"]


def test_redis_mode_shares_one_queue(db_url: str, redis_url: str, mock: MockBilibili,
                                     catalog: Catalog, tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    key = f"ddtest:{uuid.uuid4().hex[:10]}"
    env = {"DANMAKU_REDIS_URL": redis_url, "DANMAKU_REDIS_KEY": key}
    settings = {"DANMAKU_REDIS_IDLE_SECONDS": "2", "CONCURRENT_REQUESTS_PER_DOMAIN": "2"}
    make_engine(db_url).dispose()  # both workers find the schema in place
    workers = [start_crawl(mock.url, db_url, all_args(tmp_path), tmp_path / f"worker{n}.log",
                           settings=settings, env=env) for n in (1, 2)]
    try:
        for n, worker in enumerate(workers, start=1):
            assert worker.wait(120) == 0, (tmp_path / f"worker{n}.log").read_text()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{key}:requests", f"{key}:dupefilter")
        client.close()
    logs = [(tmp_path / f"worker{n}.log").read_text() for n in (1, 2)]
    assert all("'SCHEDULER': 'scrapy_redis.scheduler.Scheduler'" in log for log in logs)
    expected = catalog.expected_danmaku()
    assert stored_danmaku(db_url) == expected
    assert len(mock.requests("seg.so")) == total_segments(catalog)  # shared dupefilter
    runs = crawl_runs(db_url)
    assert [r["status"] for r in runs] == ["done", "done"]
    stats = [json.loads(r["stats_json"]) for r in runs]
    assert sum(s["danmaku_new"] for s in stats) == len(expected)
    assert sum(s["segments"] for s in stats) == total_segments(catalog)


def test_sessdata_reaches_only_the_history_endpoint(sqlite_url: str, catalog: Catalog) -> None:
    secret = f"sessdata-{uuid.uuid4().hex}"
    with MockBilibili(catalog, sessdata=secret) as mock:
        done = run_crawl(mock.url, sqlite_url, {"aid": "32024193", "history_days": "2"},
                         env={"DANMAKU_BILIBILI_SESSDATA": secret}, settings={"LOG_LEVEL": "DEBUG"})
        log = list(mock.log)
    check_ok(done)
    history = [e for e in log if e["path"].endswith("/history/seg.so")]
    assert len(history) == 2 and all("SESSDATA" in e["cookies"] for e in history)
    assert all("SESSDATA" not in e["cookies"] for e in log if e not in history)
    assert secret not in done.stdout + done.stderr
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    assert all(secret.encode() not in p.read_bytes() for p in db_file.parent.glob("danmaku.sqlite*"))
    assert stored_danmaku(sqlite_url) == catalog.expected_danmaku({32024193})
    assert last_stats(sqlite_url)["history_days"] == 2


@pytest.mark.parametrize(("args", "message"), [
    (["-a", "aid=12x"], "not a video id"),
    (["-a", "history_days=3", "-a", "aid=1"], "SESSDATA"),
    (["-a", "vid=1"], "unknown argument"),
])
def test_usage_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "scrapy", "crawl", "bilibili_danmaku", *args],
                          cwd=REPO, env=crawl_env("http://127.0.0.1:9", str(tmp_path / "x.db")),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.db").exists()
