"""``danmaku crawl video|uploader|list``: the spider in-process, from any directory, like ``scrapy crawl``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from danmaku.crawl.bvid import av_to_bv
from tests.support.mockbili import MockBilibili
from tests.support.mockbili.run import FAST, crawl_env, crawl_runs, stored_danmaku


def danmaku_command(*args: str, settings: dict[str, str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "danmaku", "crawl", *args]
    for name, value in {**FAST, **(settings or {})}.items():
        command += ["-s", f"{name}={value}"]
    return command


def run(cwd: Path, mock: MockBilibili, db: str, *args: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(danmaku_command(*args, **kw), cwd=cwd, env=crawl_env(mock.url, db),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    return done


def test_the_three_commands_crawl_everything_from_an_empty_directory(mock, catalog, tmp_path):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    listing = tmp_path / "ids.txt"
    listing.write_text("[17999430, 51364753]\n[53927818]\n")
    run(empty, mock, db, "uploader", "349991143")
    run(empty, mock, db, "list", str(listing))
    done = run(empty, mock, db, "video", av_to_bv(14034551), "av51364753")
    assert "crawl finished" in done.stderr
    assert stored_danmaku(db) == catalog.expected_danmaku()
    assert [r["status"] for r in crawl_runs(db)] == ["done", "done", "done"]
    assert list(empty.iterdir()) == []  # nothing written where it ran


def test_ctrl_c_pauses_and_the_same_command_resumes(mock, catalog, tmp_path):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    job = tmp_path / "job"
    slow = {"DOWNLOAD_DELAY": "0.08", "DOWNLOAD_DELAY_JITTER": "0", "CONCURRENT_REQUESTS_PER_DOMAIN": "1",
            "DANMAKU_FLUSH_SECONDS": "0"}
    args = ("uploader", "349991143", "--job-dir", str(job))
    first = subprocess.Popen(danmaku_command(*args, settings=slow), cwd=tmp_path, env=crawl_env(mock.url, db),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(mock.requests("seg.so")) < 10 and first.poll() is None:
            assert time.monotonic() < deadline, "crawl made no progress"
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    expected = catalog.expected_danmaku({v.aid for v in catalog.videos.values() if v.mid == 349991143})
    assert 0 < len(stored_danmaku(db)) < len(expected)
    done = run(tmp_path, mock, db, *args)
    assert "Resuming crawl" in done.stderr
    assert stored_danmaku(db) == expected
    assert [r["status"] for r in crawl_runs(db)] == ["interrupted", "done"]


def test_a_bad_id_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "danmaku", "crawl", "video", "12x"], cwd=tmp_path,
                          env=crawl_env("http://127.0.0.1:9", f"sqlite:///{tmp_path / 'x.sqlite'}"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a video id" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.sqlite").exists()


def test_scrapy_crawl_works_anywhere_with_the_settings_module(mock, catalog, tmp_path):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    command = [sys.executable, "-m", "scrapy", "crawl", "bilibili_danmaku", "-a", "aid=51364753"]
    for name, value in FAST.items():
        command += ["-s", f"{name}={value}"]
    env = crawl_env(mock.url, db, {"SCRAPY_SETTINGS_MODULE": "danmaku.crawl.settings"})
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stored_danmaku(db) == catalog.expected_danmaku({51364753})


def test_crawled_danmaku_over_the_length_cap_are_counted_not_stored(mock, catalog, tmp_path):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    done = subprocess.run(danmaku_command("video", "av51364753"), cwd=tmp_path,
                          env=crawl_env(mock.url, db, {"DANMAKU_MAX_DANMAKU_CHARS": "3"}),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    everything = catalog.expected_danmaku({51364753})
    short = [row for row in everything if len(row[5]) <= 3]
    assert 0 < len(short) < len(everything)
    assert stored_danmaku(db) == short
    stats = json.loads(crawl_runs(db)[-1]["stats_json"])
    assert stats["rejected_long"] == len(everything) - len(short)
