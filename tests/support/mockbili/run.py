"""Run ``scrapy crawl bilibili_danmaku`` against a mock, and read back what it stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from danmaku.store.db import resolve_url
from tests.conftest import PYTHONPATH

REPO = Path(__file__).resolve().parents[3]

FAST = {
    # Politeness off against the local mock; faults back off in milliseconds.
    "AUTOTHROTTLE_ENABLED": "False",
    "DOWNLOAD_DELAY": "0",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "8",
    "DOWNLOAD_TIMEOUT": "1",
    "RETRY_TIMES": "2",
    "DANMAKU_BACKOFF_BASE": "0.05",
    "DANMAKU_BLOCKED_BACKOFF_BASE": "0.1",
    "DANMAKU_BACKOFF_JITTER": "0",
    "LOG_LEVEL": "INFO",
}


def crawl_command(args: dict[str, str], settings: dict[str, str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "scrapy", "crawl", "bilibili_danmaku"]
    for name, value in args.items():
        command += ["-a", f"{name}={value}"]
    for name, value in {**FAST, **(settings or {})}.items():
        command += ["-s", f"{name}={value}"]
    return command


def crawl_env(base_url: str, db_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DANMAKU_REDIS_URL", "DANMAKU_BILIBILI_SESSDATA", "DANMAKU_REDIS_KEY")}
    env.update({"PYTHONPATH": PYTHONPATH, "DANMAKU_BILIBILI_BASE_URL": base_url,
                "DANMAKU_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_crawl(base_url: str, db_url: str, args: dict[str, str], *,
              settings: dict[str, str] | None = None, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """The crawl as a user runs it, from the repository root; output captured."""
    return subprocess.run(crawl_command(args, settings), cwd=REPO,
                          env=crawl_env(base_url, db_url, env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def start_crawl(base_url: str, db_url: str, args: dict[str, str], log: Path, *,
                settings: dict[str, str] | None = None,
                env: dict[str, str] | None = None) -> subprocess.Popen:
    """The crawl in the background, its output into ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(crawl_command(args, settings), cwd=REPO,
                                env=crawl_env(base_url, db_url, env), stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def stored_danmaku(db_url: str) -> list[tuple]:
    """Sorted (key, dmid, position_ms, sent_at_ms, sender, text, mode, color, font_size, pool)."""
    engine = create_engine(resolve_url(db_url))
    try:
        with engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(text(
                "SELECT s.key, d.dmid, d.position_ms, d.sent_at_ms, d.sender, d.text, d.mode, "
                "d.color, d.font_size, d.pool FROM danmaku d JOIN source s ON s.id = d.source_id"))]
            # CSV-imported rows have no dmid and no display fields: sort them first.
            return sorted(rows, key=lambda r: tuple((v is not None, v or 0) if i != 0 and i != 5
                                                    else v for i, v in enumerate(r)))
    finally:
        engine.dispose()


def stored_sources(db_url: str) -> dict[str, dict]:
    engine = create_engine(resolve_url(db_url))
    try:
        with engine.connect() as conn:
            return {row.key: dict(row._mapping) for row in conn.execute(text(
                "SELECT key, aid, bvid, cid, page, title, uploader_mid, duration_s, "
                "started_at_ms, origin, status FROM source"))}
    finally:
        engine.dispose()


def crawl_runs(db_url: str) -> list[dict]:
    engine = create_engine(resolve_url(db_url))
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(
                "SELECT id, kind, status, files, sources, rows, rejected, skipped, stats_json "
                "FROM run WHERE kind = 'crawl' ORDER BY id"))]
    finally:
        engine.dispose()
