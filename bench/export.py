"""Corpus export speed: ``danmaku corpus export`` vs Google's FullTokenizer filter vs ``cat``.

    PYTHONPATH=$PWD python bench/export.py [--db store.sqlite] [--slice 200000] [--append]

1. Imports the full shared sample (``../shared/data/video_danmaku`` and
   ``live_danmaku``) with ``danmaku import csv`` / ``danmaku import live`` into a fresh
   SQLite file, unless ``--db`` names one already filled.
2. Times, each in its own process (so each peak RSS is its own):
   - the project's export of the whole store (``export_corpus``, 1 and 2 workers),
     start-up (vocab tables) included;
   - the floor under any export from this store: its query through the raw
     SQLite cursor, rows fetched and dropped;
   - the reference: Google's ``FullTokenizer`` making the keep/drop decision on
     the first ``--slice`` danmaku of the store in export order (the study's
     filter, without reading or writing anything);
   - the project's filter alone on the same slice;
   - ``cat`` of the produced ``danmaku_text_pure.txt`` (best of 5, page cache warm).
3. Prints one table (danmaku/s, ratios to the reference and to ``cat``, CPU
   seconds, peak RSS). ``--append`` adds it to ``bench/RESULTS.md`` under
   ``## corpus export``. Goals (issue 4): >= 50x the reference, within 5x of ``cat``.

Wall-clock rates depend on what else the (shared) machine runs; CPU seconds and
the load average are printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
VOCAB = SHARED_DATA / "vocab.txt"
RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## corpus export"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _slice(db: str, n: int) -> list[str]:
    from sqlalchemy import select

    from danmaku.store.db import make_engine
    from danmaku.store.models import Danmaku

    with make_engine(db).connect() as conn:
        return list(conn.execute(select(Danmaku.text).order_by(
            Danmaku.source_id, Danmaku.sent_at_ms, Danmaku.id).limit(n)).scalars())


# --------------------------------------------------------------------------- stages (child processes)


def stage_export(db: str, out: str, workers: int) -> dict:
    from danmaku.corpus.export import export_corpus
    from danmaku.store.db import make_engine

    engine = make_engine(db)
    wall, cpu = time.perf_counter(), time.process_time()
    result = export_corpus(engine, VOCAB, out=out, workers=workers, force=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    counts = result.manifest["counts"]
    return {"danmaku": counts["danmaku_read"], "kept": counts["danmaku_kept"], "seconds": wall,
            "cpu": cpu + children.ru_utime + children.ru_stime, "rss_mb": _peak_rss_mb(),
            "children_rss_mb": children.ru_maxrss / 1024, "version": result.manifest["version"],
            "lines": result.manifest["files"]["danmaku_text_pure.txt"]["danmaku"]}


def stage_reference(db: str, n: int) -> dict:
    from danmaku.corpus.lines import one_line
    from tests.support.google_reference import full_tokenizer

    texts = _slice(db, n)
    tokenizer = full_tokenizer(VOCAB)
    wall, cpu = time.perf_counter(), time.process_time()
    kept = 0
    for text in texts:
        tokens = tokenizer.tokenize(one_line(text))
        kept += bool(tokens) and "[UNK]" not in tokens
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"danmaku": len(texts), "kept": kept, "seconds": wall, "cpu": cpu, "rss_mb": _peak_rss_mb()}


def stage_filter(db: str, n: int) -> dict:
    from danmaku.corpus.lines import one_line_batch
    from danmaku.text.vocab_filter import KEEP, VocabFilter

    texts = _slice(db, n)
    vocab_filter = VocabFilter(VOCAB)
    wall, cpu = time.perf_counter(), time.process_time()
    kept = 0
    for start in range(0, len(texts), 20_000):
        kept += vocab_filter.decide_batch(one_line_batch(texts[start:start + 20_000])).count(KEEP)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"danmaku": len(texts), "kept": kept, "seconds": wall, "cpu": cpu, "rss_mb": _peak_rss_mb()}


def stage_scan(db: str) -> dict:
    """The floor: the export's query through the raw cursor, nothing done with the rows."""
    import sqlite3

    from danmaku.corpus.export_reader import Selection, queries, sql_text
    from danmaku.store.db import make_engine

    engine = make_engine(db)
    sql = sql_text(queries(Selection())[1], engine)
    wall, cpu = time.perf_counter(), time.process_time()
    cursor = sqlite3.connect(db).execute(sql)
    rows = 0
    while batch := cursor.fetchmany(20_000):
        rows += len(batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"danmaku": rows, "seconds": wall, "cpu": cpu, "rss_mb": _peak_rss_mb()}


def run_stage(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, __file__, "--stage", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"stage {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def import_sample(db: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    for kind, folder in (("csv", "video_danmaku"), ("live", "live_danmaku")):
        subprocess.run([sys.executable, "-m", "danmaku", "import", kind, str(SHARED_DATA / folder),
                        "--db", str(db)], env=env, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def time_cat(path: Path) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def cpu_ratio(case: dict, reference: dict) -> float:
    return (case["danmaku"] / case["cpu"]) / (reference["danmaku"] / reference["cpu"])


def table(rows: list[tuple[str, dict]], ref_rate: float, cat_rate: float) -> str:
    lines = ["| case | danmaku | seconds | danmaku/s | CPU s | x reference | cat is x faster | peak RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        rate = r["danmaku"] / r["seconds"]
        cpu = f"{r['cpu']:.2f}" if "cpu" in r else ""
        rss = f"{r['rss_mb']:.0f} MB" if "rss_mb" in r else ""
        if r.get("children_rss_mb"):
            rss += f" (+ workers {r['children_rss_mb']:.0f} MB each)"
        lines.append(f"| {name} | {r['danmaku']:,} | {r['seconds']:.3f} | {rate:,.0f} | {cpu} | "
                     f"{rate / ref_rate:,.1f} | {cat_rate / rate:,.1f} | {rss} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="an SQLite store already holding the shared sample")
    parser.add_argument("--slice", type=int, default=200_000, help="danmaku for the filter rows")
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        name, *rest = args.stage
        if name == "export":
            print(json.dumps(stage_export(rest[0], rest[1], int(rest[2]))))
        elif name == "reference":
            print(json.dumps(stage_reference(rest[0], int(rest[1]))))
        elif name == "scan":
            print(json.dumps(stage_scan(rest[0])))
        else:
            print(json.dumps(stage_filter(rest[0], int(rest[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="danmaku-bench-export-") as tmp:
        work = Path(tmp)
        if args.db:
            db, import_s = Path(args.db), None
        else:
            db = work / "store.sqlite"
            print("importing the shared sample ...", file=sys.stderr)
            import_s = import_sample(db)
        load_before = os.getloadavg()[0]
        out = work / "corpus"
        print("exporting ...", file=sys.stderr)
        export1 = run_stage("export", str(db), str(out), "1")
        export2 = run_stage("export", str(db), str(work / "corpus2"), "2")
        print("reference filter ...", file=sys.stderr)
        reference = run_stage("reference", str(db), str(args.slice))
        ours = run_stage("filter", str(db), str(args.slice))
        scan = run_stage("scan", str(db))
        if ours["kept"] != reference["kept"]:
            sys.exit(f"filter disagrees with the reference: {ours['kept']} != {reference['kept']} kept")
        corpus_file = out / "danmaku_text_pure.txt"
        cat = {"danmaku": export1["lines"], "seconds": time_cat(corpus_file)}
        size_mb = corpus_file.stat().st_size / 1e6
        load_after = os.getloadavg()[0]

    ref_rate = reference["danmaku"] / reference["seconds"]
    cat_rate = cat["danmaku"] / cat["seconds"]
    rows = [
        ("Google FullTokenizer filter, slice (reference)", reference),
        ("danmaku VocabFilter alone, same slice", ours),
        ("danmaku corpus export, whole store, 1 process", export1),
        ("danmaku corpus export, whole store, 2 workers", export2),
        ("SQLite scan alone (export query, raw cursor, rows dropped)", scan),
        ("cat danmaku_text_pure.txt", cat),
    ]
    body = table(rows, ref_rate, cat_rate)
    rate1 = export1["danmaku"] / export1["seconds"]
    notes = (
        f"Store: {export1['danmaku']:,} danmaku (shared sample), {export1['kept']:,} kept, corpus version "
        f"{export1['version']}, {size_mb:.1f} MB (same with 2 workers: "
        f"{export1['version'] == export2['version']}). "
        + (f"Import (danmaku import csv + live): {import_s:.1f} s. " if import_s is not None else "")
        + f"Export, 1 process: {rate1 / ref_rate:.0f}x the reference (goal 50x; per CPU second "
        f"{cpu_ratio(export1, reference):.0f}x, the filter alone {cpu_ratio(ours, reference):.0f}x, "
        f"the bare SQLite scan {cpu_ratio(scan, reference):.0f}x), cat is {cat_rate / rate1:.0f}x "
        f"faster (goal <= 5x). Load average {load_before:.1f} before, "
        f"{load_after:.1f} after (shared machine: wall-clock rows vary). Python {platform.python_version()}."
    )
    print(body)
    print()
    print(notes)
    if args.append:
        text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
        entry = (f"\n### {date.today().isoformat()}, 2-core x86-64 CPU, 24 GB, no GPU\n\n"
                 f"`python bench/export.py{' --db ' + args.db if args.db else ''}`\n\n{body}\n\n{notes}\n")
        if SECTION not in text:
            text = text.rstrip("\n") + f"\n\n{SECTION}\n"
        head, _, tail = text.partition(SECTION + "\n")
        cut = tail.find("\n## ")
        mine, rest = (tail, "") if cut == -1 else (tail[:cut], tail[cut:])
        text = head + SECTION + "\n" + (mine.strip("\n") + "\n" if mine.strip() else "") + entry + rest
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
