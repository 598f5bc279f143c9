"""Importers on SQLite and PostgreSQL: exact rows, idempotence, crash safety, CLI."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.importers.live_chat import import_live_chat, split_broadcasts
from danmaku.importers.parsers import parse_video_csv
from danmaku.importers.run import StrictModeError
from danmaku.importers.video_csv import import_video_csv
from danmaku.store.db import make_engine
from danmaku.store.models import Danmaku, ImportedFile, Reject, Source
from danmaku.store.writes import upsert_source
from tests.conftest import FIXTURES, PYTHONPATH, SHARED_DATA

VIDEO = FIXTURES / "video_danmaku"
LIVE = FIXTURES / "live_danmaku"


def store_digest(engine) -> tuple[int, str]:
    """Row count and a digest of every danmaku with its source key, order-independent."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Source.key, Danmaku.sent_at_ms, Danmaku.position_ms, Danmaku.sender, Danmaku.text)
            .join(Source, Source.id == Danmaku.source_id)
        ).all()
    lines = sorted(repr(tuple(r)) for r in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def expected_csv_rows(root: Path) -> list[tuple]:
    rows = []
    for path in sorted(root.rglob("*.csv")):
        aid = int(path.stem)
        for r in parse_video_csv(path.read_bytes()):
            if isinstance(r, tuple):
                rows.append((f"video:{aid}:1", r[3], r[2], None, r[1]))
    return rows


def test_csv_import_stores_every_record_exactly(db_url):
    engine = make_engine(db_url)
    summary = import_video_csv(engine, VIDEO, workers=1)
    expected = expected_csv_rows(VIDEO)
    assert summary.rows == len(expected) == 31 + 40 + 21 + 31 + (253 - 226)
    assert summary.rejected == 0 and summary.files_imported == 5
    with engine.connect() as conn:
        stored = conn.execute(
            select(Source.key, Danmaku.sent_at_ms, Danmaku.position_ms, Danmaku.sender, Danmaku.text)
            .join(Source).order_by(Danmaku.id)).all()
        sources = conn.execute(select(Source.key, Source.aid, Source.page, Source.uploader_mid,
                                      Source.kind)).all()
    assert sorted(map(tuple, stored)) == sorted(expected)
    assert ("video:14034551:1", 14034551, 1, 125823832, "video_page") in [tuple(s) for s in sources]
    # texts exactly as given: commas, newlines, carriage returns, surrounding spaces
    texts = {row[4] for row in stored}
    assert "," in texts and any("\n" in t for t in texts) and any(t.endswith("\r") for t in texts)


def test_reimport_adds_nothing(db_url):
    engine = make_engine(db_url)
    import_video_csv(engine, VIDEO, workers=1)
    import_live_chat(engine, LIVE)
    before = store_digest(engine)
    again = import_video_csv(engine, VIDEO, workers=2)
    again_live = import_live_chat(engine, LIVE)
    assert again.rows == 0 and again.files_skipped == 5
    assert again_live.rows == 0 and again_live.files_skipped == 4
    assert store_digest(engine) == before


def test_bad_lines_are_counted_stored_and_never_crash(db_url, tmp_path):
    tree = tmp_path / "tree" / "1"
    tree.mkdir(parents=True)
    (tree / "10.csv").write_bytes(
        "好,1.00000,2019-01-01 00:00:00\n".encode() + b"\xffbad,2.00000,2019-01-01 00:00:00\n"
        + b"truncated")
    (tree / "11.csv").write_bytes(b"o\x00k,1.00000,2019-01-01 00:00:00\n")
    engine = make_engine(db_url)
    summary = import_video_csv(engine, tmp_path / "tree", workers=1)
    assert (summary.rows, summary.rejected, summary.files_imported) == (2, 2, 2)
    with engine.connect() as conn:
        rejects = conn.execute(select(Reject.file, Reject.line, Reject.reason).order_by(Reject.line)).all()
    assert [(f, line) for f, line, _ in rejects] == [("1/10.csv", 2), ("1/10.csv", 3)]
    with engine.connect() as conn:  # NUL cannot be stored in PostgreSQL text: U+FFFD on both
        assert "o\ufffdk" in conn.execute(select(Danmaku.text)).scalars().all()


def test_strict_mode_stops_before_storing_the_bad_file(sqlite_url, tmp_path):
    tree = tmp_path / "tree" / "1"
    tree.mkdir(parents=True)
    (tree / "10.csv").write_bytes(b"\xffbad,2.00000,2019-01-01 00:00:00\n")
    engine = make_engine(sqlite_url)
    with pytest.raises(StrictModeError, match=r"1/10.csv:1: invalid UTF-8"):
        import_video_csv(engine, tmp_path / "tree", strict=True, workers=1)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Danmaku)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(ImportedFile)).scalar() == 0


def speaker_counts(path: Path) -> dict[str, int] | None:
    """Per-uid danmaku counts from the file's own SPEAKERNUM summary line."""
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if line.startswith("SPEAKERNUM"):
            body = line.split(";", 1)[1]
            return {uid: int(n) for uid, n in re.findall(r"(?:^|,)(\d+):.*?:(\d+)(?=,\d+:|$)", body)}
    return None


def test_live_import_matches_speakernum_summaries(db_url):
    engine = make_engine(db_url)
    import_live_chat(engine, LIVE)
    checked = 0
    with engine.connect() as conn:
        for path in sorted(LIVE.rglob("*.txt")):
            expected = speaker_counts(path)
            if expected is None:
                continue
            day = path.stem
            counts = dict(conn.execute(text(
                "SELECT d.sender, count(*) FROM danmaku d JOIN source s ON s.id = d.source_id "
                "WHERE s.room_id = :room GROUP BY d.sender"), {"room": int(path.parent.name)}).all())
            if len(list(path.parent.glob("*.txt"))) == 1:
                assert counts == expected, day
                checked += 1
    assert checked >= 1


def test_live_broadcasts_cut_by_silence_across_midnight(db_url, tmp_path):
    room = tmp_path / "live" / "777"
    room.mkdir(parents=True)
    base = 1583679000000  # 2020-03-08 22:50 China time
    minute = 60_000
    (room / "2020-3-8.txt").write_text(
        f"V2\n{base}:1:a\nTIME22:50ONLINE5\n{base + 40 * minute}:2:b\n{base + 65 * minute}:3:c\n")
    (room / "2020-3-9.txt").write_text(f"{base + 80 * minute}:4:d\n{base + 200 * minute}:5:e\n")
    engine = make_engine(db_url)
    summary = import_live_chat(engine, tmp_path / "live", gap_minutes=30)
    assert summary.rows == 5 and summary.sources_created == 3
    with engine.connect() as conn:
        per_source = conn.execute(text(
            "SELECT s.key, s.started_at_ms, s.ended_at_ms, count(d.id) FROM source s "
            "JOIN danmaku d ON d.source_id = s.id GROUP BY s.key, s.started_at_ms, s.ended_at_ms "
            "ORDER BY s.started_at_ms")).all()
    assert [(k, n) for k, _, _, n in per_source] == [
        (f"live:777:{base}", 1),
        (f"live:777:{base + 40 * minute}", 3),  # 22:50+40 .. across midnight .. 00:10
        (f"live:777:{base + 200 * minute}", 1),
    ]
    assert per_source[1][2] == base + 80 * minute


def test_live_broadcast_continues_across_separate_imports(sqlite_url, tmp_path):
    base = 1583679000000
    first, second = tmp_path / "a" / "9", tmp_path / "b" / "9"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    (first / "2020-3-8.txt").write_text(f"{base}:1:x\n")
    (second / "2020-3-9.txt").write_text(f"{base + 20 * 60_000}:1:y\n")
    engine = make_engine(sqlite_url)
    import_live_chat(engine, tmp_path / "a")
    import_live_chat(engine, tmp_path / "b")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Source)).scalar() == 1


def test_split_broadcasts():
    assert split_broadcasts([], 10) == []
    assert split_broadcasts([0, 5, 10, 21, 22], 10) == [(0, 3), (3, 5)]


def test_crawler_fills_a_csv_source_instead_of_duplicating(db_url):
    engine = make_engine(db_url)
    import_video_csv(engine, VIDEO, workers=1)
    with engine.begin() as conn:
        source_id, created = upsert_source(
            conn, "video:14034551:1", "video_page", "crawl",
            {"cid": 123, "bvid": "BV1xx", "title": "t", "uploader_mid": 999})
    assert not created
    with engine.connect() as conn:
        row = conn.execute(select(Source.cid, Source.bvid, Source.title, Source.uploader_mid)
                           .where(Source.id == source_id)).one()
    assert tuple(row) == (123, "BV1xx", "t", 125823832)


def _count_rows(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Danmaku)).scalar() or 0
    except Exception:
        return 0
    finally:
        engine.dispose()


def test_killed_import_resumes_to_exactly_one_clean_import(db_url, tmp_path):
    """kill -9 in the middle of a real import, rerun: the same rows as a clean import."""
    source = SHARED_DATA / "video_danmaku"
    tree = tmp_path / "tree"
    copied_lines = 0
    for path in sorted(source.rglob("*.csv")):
        if copied_lines >= 60_000:
            break
        (tree / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tree / path.parent.name / path.name)
        copied_lines += path.read_bytes().count(b"\n")
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    cmd = [sys.executable, "-m", "danmaku", "import", "csv", str(tree), "--db", db_url,
           "--batch-rows", "2000", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _count_rows(db_url) < 10_000:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _count_rows(db_url)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    clean_url = db_url + "_clean" if db_url.startswith("sqlite") else None
    if clean_url is None:
        clean_url = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    clean = make_engine(clean_url)
    import_video_csv(clean, tree, workers=1)
    resumed = make_engine(db_url)
    assert 0 < partial < store_digest(clean)[0], "the kill did not land mid-import"
    assert store_digest(resumed) == store_digest(clean)


def test_cli_import_and_stats_json(tmp_path):
    db = str(tmp_path / "cli.sqlite")
    runner = CliRunner()
    result = runner.invoke(app, ["import", "csv", str(VIDEO), "--db", db, "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["import", "live", str(LIVE), "--db", db])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["db", "stats", "--json", "--db", db])
    assert result.exit_code == 0, result.output
    import json

    stats = json.loads(result.stdout)
    live_rows = sum(1 for p in LIVE.rglob("*.txt") for line in p.read_text().splitlines()
                    if re.match(r"^\d+:\d+:", line))
    assert stats["danmaku"] == len(expected_csv_rows(VIDEO)) + live_rows
    assert stats["by_kind"]["video_page"]["sources"] == 5
    assert isinstance(stats["sources"], int) and stats["rejected"] == 0


def test_cli_errors_are_clear(tmp_path):
    result = CliRunner().invoke(app, ["import", "csv", str(tmp_path / "missing"), "--db",
                                      str(tmp_path / "x.sqlite")], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert "is not a directory" in result.output


def test_csv_import_after_a_crawl_adds_only_what_the_crawler_lacked(db_url):
    """A crawl stored two of a video's comments (with dmids); the CSV import adds the rest once."""
    from danmaku.store.writes import add_crawled_danmaku

    engine = make_engine(db_url)
    path = VIDEO / "125823832/14034551.csv"
    records = [r for r in parse_video_csv(path.read_bytes()) if isinstance(r, tuple)]
    with engine.begin() as conn:
        source_id, _ = upsert_source(conn, "video:14034551:1", "video_page", "crawl", {"cid": 5})
        crawled = [(900 + i, r[2], r[3], "abcd", r[1], 1, 0xFFFFFF, 25, 0)
                   for i, r in enumerate(records[:2])]
        add_crawled_danmaku(conn, source_id, crawled)
    summary = import_video_csv(engine, VIDEO, workers=1)
    with engine.connect() as conn:
        stored = conn.execute(select(Danmaku.text, Danmaku.position_ms, Danmaku.sent_at_ms, Danmaku.dmid)
                              .where(Danmaku.source_id == source_id)).all()
    assert sorted((t, p, s) for t, p, s, _ in stored) == sorted(r[1:] for r in records)
    assert sum(1 for *_, dmid in stored if dmid is not None) == 2
    assert summary.rows == len(expected_csv_rows(VIDEO)) - 2  # rows stored
