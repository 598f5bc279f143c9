"""Benchmark: `danmaku import csv` on the whole shared sample vs sqlite3's own `.import`.

The reference is the sqlite3 shell importing the same rows (already parsed, as
CSV) into a table with the same columns and export index: the physical speed
of SQLite on this machine. Flat memory is shown by importing 25 %, 50 % and
100 % of the tree, each in a fresh process, and reporting each one's peak RSS.

    python bench/import.py [--data ../shared/data/video_danmaku]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from danmaku.importers.parsers import parse_video_csv  # noqa: E402


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, largest process of the tree) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def subset_tree(source: Path, fraction: float, into: Path) -> Path:
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    into.mkdir(parents=True)
    for folder in folders[: max(1, round(len(folders) * fraction))]:
        (into / folder.name).symlink_to(folder)
    return into


def write_reference_csv(source: Path, out: Path) -> int:
    rows = 0
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for path in sorted(source.rglob("*.csv")):
            aid = int(path.stem)
            for record in parse_video_csv(path.read_bytes()):
                if isinstance(record, tuple):
                    writer.writerow((aid, record[1], record[2], record[3]))
                    rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/video_danmaku")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="danmaku-bench-import-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    results = []
    try:
        for fraction in (0.25, 0.5, 1.0):
            tree = subset_tree(args.data, fraction, work / f"tree{int(fraction * 100)}")
            db = work / f"danmaku{int(fraction * 100)}.sqlite"
            seconds, rss = run_measured(
                [sys.executable, "-m", "danmaku", "import", "csv", str(tree), "--db", str(db)], env)
            rows = int(subprocess.check_output(
                ["sqlite3", str(db), "SELECT count(*) FROM danmaku"]).decode())
            results.append((f"danmaku import csv ({int(fraction * 100)} % of tree)", rows, seconds, rss))

        ref_csv = work / "rows.csv"
        rows = write_reference_csv(args.data, ref_csv)
        ref_db = work / "ref.sqlite"
        script = (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;\n"
            "CREATE TABLE danmaku (source_id INTEGER, text TEXT, position_ms INTEGER, sent_at_ms INTEGER);\n"
            "CREATE INDEX ix_export ON danmaku (source_id, sent_at_ms);\n"
            f".mode csv\n.import {ref_csv} danmaku\n"
        )
        script_path = work / "ref.sql"
        script_path.write_text(script)
        seconds, rss = run_measured(["sqlite3", str(ref_db), f".read {script_path}"])
        results.append(("sqlite3 .import (reference)", rows, seconds, rss))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref_rate = results[-1][1] / results[-1][2]
    print(f"{'what':<34} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'x ref':>6} {'peak RSS MiB':>13}")
    for name, rows, seconds, rss in results:
        rate = rows / seconds
        print(f"{name:<34} {rows:>10,} {seconds:>8.1f} {rate:>10,.0f} {rate / ref_rate:>6.2f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
