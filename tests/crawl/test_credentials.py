"""The SESSDATA login cookie is never written anywhere a paused crawl leaves behind.

A history request that backs off is put back into the scheduler; a Ctrl-C
during the back-off writes that queue to the JOBDIR (or leaves it in Redis).
Each test pauses such a crawl for real against tests/mockbili and reads every
byte it left -- JOBDIR files, Redis values, the log, the store -- for the cookie.
"""

from __future__ import annotations

import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.mockbili import Catalog, Fault, MockBilibili
from tests.support.mockbili.run import run_crawl, start_crawl, stored_danmaku

AID = "32024193"
HISTORY = r"/x/v2/dm/web/history/seg\.so"
PAUSED = {
    # The history answers 503: the crawl stops taking requests for a minute, and the
    # backed-off requests wait in the queue when Ctrl-C comes.
    "DANMAKU_BACKOFF_BASE": "60",
    "DANMAKU_FLUSH_SECONDS": "0",
    "LOG_LEVEL": "DEBUG",
}


def pause_during_back_off(crawl: subprocess.Popen, log: Path, mock: MockBilibili) -> str:
    """Wait until a history request was answered 503 and backed off; Ctrl-C; the log."""
    try:
        deadline = time.monotonic() + 60
        while "history/seg.so" not in "".join(line for line in log.read_text().splitlines()
                                              if "HTTP 503 on" in line):
            assert crawl.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no history back-off: " + log.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(1)  # the backed-off request reaches the scheduler microseconds after the log line
        crawl.send_signal(signal.SIGINT)
        assert crawl.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if crawl.poll() is None:
            crawl.kill()
    return log.read_text()


def store_bytes(sqlite_url: str) -> bytes:
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in db_file.parent.glob("danmaku.sqlite*"))


def test_paused_jobdir_crawl_keeps_no_cookie(sqlite_url: str, catalog: Catalog, tmp_path: Path) -> None:
    secret = f"sessdata-{uuid.uuid4().hex}"
    jobdir = tmp_path / "job"
    env = {"DANMAKU_BILIBILI_SESSDATA": secret}
    args = {"aid": AID, "history_days": "2"}
    with MockBilibili(catalog, sessdata=secret) as mock:
        fault = Fault(HISTORY, "http503", times=-1)
        mock.add_faults(fault)
        crawl = start_crawl(mock.url, sqlite_url, args, tmp_path / "first.log",
                            settings={**PAUSED, "JOBDIR": str(jobdir)}, env=env)
        log = pause_during_back_off(crawl, tmp_path / "first.log", mock)

        files = [p for p in jobdir.rglob("*") if p.is_file()]
        queued = b"".join(p.read_bytes() for p in files)
        assert b"/history/seg.so" in queued, [p.name for p in files]  # the requests are there
        leaks = [str(p.relative_to(jobdir)) for p in files if secret.encode() in p.read_bytes()]
        assert leaks == [], f"SESSDATA written to {leaks}"
        assert secret not in log
        assert secret.encode() not in store_bytes(sqlite_url)
        assert stat.S_IMODE(jobdir.stat().st_mode) & 0o077 == 0  # only the owner can look inside

        fault.times = 0  # Bilibili answers again: the resumed crawl sends the cookie anew
        done = run_crawl(mock.url, sqlite_url, args, settings={"JOBDIR": str(jobdir)}, env=env)
        history = mock.requests("/history/")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming crawl" in done.stderr
    resumed = [e for e in history if e["fault"] is None]
    assert len(resumed) == 2 and all(e["status"] == 200 and "SESSDATA" in e["cookies"]
                                     for e in resumed)
    assert secret not in done.stdout + done.stderr
    assert secret.encode() not in store_bytes(sqlite_url)
    assert stored_danmaku(sqlite_url) == catalog.expected_danmaku({int(AID)})


def test_paused_redis_crawl_keeps_no_cookie(sqlite_url: str, redis_url: str, catalog: Catalog,
                                            tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    secret = f"sessdata-{uuid.uuid4().hex}"
    key = f"ddtest:{uuid.uuid4().hex[:10]}"
    env = {"DANMAKU_BILIBILI_SESSDATA": secret, "DANMAKU_REDIS_URL": redis_url,
           "DANMAKU_REDIS_KEY": key}
    client = redis.Redis.from_url(redis_url)
    try:
        with MockBilibili(catalog, sessdata=secret) as mock:
            mock.add_faults(Fault(HISTORY, "http503", times=-1))
            crawl = start_crawl(mock.url, sqlite_url, {"aid": AID, "history_days": "2"},
                                tmp_path / "worker.log", settings=PAUSED, env=env)
            log = pause_during_back_off(crawl, tmp_path / "worker.log", mock)
        values = {name.decode(): redis_values(client, name) for name in client.keys(f"{key}:*")}
    finally:
        for name in client.keys(f"{key}:*"):
            client.delete(name)
        client.close()
    assert "'SCHEDULER': 'scrapy_redis.scheduler.Scheduler'" in log
    assert b"/history/seg.so" in b"".join(values.get(f"{key}:requests", [])), sorted(values)
    leaks = [name for name, items in values.items() if any(secret.encode() in v for v in items)]
    assert leaks == [], f"SESSDATA written to Redis keys {leaks}"
    assert secret not in log
    assert secret.encode() not in store_bytes(sqlite_url)


def redis_values(client, name: bytes) -> list[bytes]:
    """Every value stored under one key, whatever its type."""
    kind = client.type(name).decode()
    if kind == "string":
        return [client.get(name)]
    if kind == "zset":
        return list(client.zrange(name, 0, -1))
    if kind == "set":
        return list(client.smembers(name))
    if kind == "list":
        return list(client.lrange(name, 0, -1))
    if kind == "hash":
        return [part for pair in client.hgetall(name).items() for part in pair]
    raise AssertionError(f"unexpected Redis type {kind} of {name!r}")


def test_retries_of_a_sent_request_lose_the_cookie_when_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_retry_request`` copies the headers of the request as sent; queueing drops them."""
    import asyncio

    from scrapy import Request, Spider, signals
    from scrapy.downloadermiddlewares.retry import get_retry_request
    from scrapy.utils.test import get_crawler

    from danmaku.crawl import api
    from danmaku.crawl.middlewares.device import SESSDATA_ENV, DeviceCookiesMiddleware

    secret = f"sessdata-{uuid.uuid4().hex}"
    monkeypatch.setenv(SESSDATA_ENV, secret)
    crawler = get_crawler(Spider)
    spider = Spider.from_crawler(crawler, name="test")
    middleware = DeviceCookiesMiddleware.from_crawler(crawler)
    middleware._cookies = {"buvid3": "b3", "buvid4": "b4"}  # as fetched from finger/spi
    sent = Request(api.history_url(3202419301, "2019-05-01"))
    asyncio.run(middleware.process_request(sent))
    assert secret in sent.headers.get("Cookie").decode()  # on the wire

    retry = get_retry_request(sent, spider=spider, reason="undecodable history segment")
    assert retry is not None and retry.headers.get("Cookie") == sent.headers.get("Cookie")
    crawler.signals.send_catch_log(signals.request_scheduled, request=retry, spider=spider)
    assert "Cookie" not in retry.headers  # what the scheduler serialises
    assert secret in sent.headers.get("Cookie").decode()  # the sent request is left alone

    asyncio.run(middleware.process_request(retry))  # sent again: the cookie is back
    assert retry.headers.get("Cookie") == sent.headers.get("Cookie")
