"""``danmaku import csv``: the public video-danmaku CSV tree -> the store.

Layout ``{uploader_mid}/{aid}.csv``; one file is one video (page 1: the data set
has no multi-part videos), so one source keyed ``video:{aid}:1`` -- the key the
crawler uses too. Worker processes read, hash and parse files while the main
process writes; files are committed in batches, each batch in one transaction
with its ``imported_file`` markers, so an interrupted import loses at most the
batch in flight and a re-run skips every committed file.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from danmaku.importers.parsers import BadLine, parse_video_csv
from danmaku.store.models import VIDEO_PAGE
from danmaku.store.runs import (
    ImportSummary,
    StrictModeError,
    finish_run,
    imported_files,
    record_files,
    record_rejects,
    sha1_of,
    start_run,
)
from danmaku.store.writes import drop_already_crawled, insert_danmaku, source_key_video, upsert_sources

KIND = "video_csv"
DEFAULT_BATCH_ROWS = 100_000
COLUMNS = ("source_id", "text", "position_ms", "sent_at_ms")
IN_FLIGHT_PER_WORKER = 16


@dataclass
class ParsedFile:
    """One file after a worker read it: its rows, or why it was skipped."""

    name: str
    mid: int
    aid: int
    size: int
    sha1: str
    state: str  # "new", "skipped" (same content imported), "changed"
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def find_csv_files(root: Path) -> Iterator[tuple[str, int, int, Path]]:
    """(name, mid, aid, path) of every ``{mid}/{aid}.csv`` below root, sorted.

    ``root`` may be the tree or a single uploader's folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    if root.name.isdigit() and any(p.suffix == ".csv" for p in root.iterdir()):
        folders = [root]
    else:
        folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for folder in folders:
        for path in sorted(folder.glob("*.csv"), key=lambda p: p.name):
            if folder.name.isdigit() and path.stem.isdigit():
                yield f"{folder.name}/{path.name}", int(folder.name), int(path.stem), path


def read_csv_file(task: tuple[str, int, int, str, str | None]) -> ParsedFile:
    """Worker: read one file, compare with what is stored, parse it if new."""
    name, mid, aid, path, known_sha1 = task
    data = Path(path).read_bytes()
    sha1 = sha1_of(data)
    parsed = ParsedFile(name, mid, aid, len(data), sha1, "new")
    if known_sha1 is not None:
        parsed.state = "skipped" if known_sha1 == sha1 else "changed"
        return parsed
    for item in parse_video_csv(data):
        if isinstance(item, tuple):
            parsed.rows.append(item[1:])
        else:
            parsed.bad.append(item)
    return parsed


def import_video_csv(
    engine: Engine,
    root: Path,
    *,
    strict: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    workers: int | None = None,
    on_file: Callable[[str, int], None] | None = None,
    on_bad: Callable[[str, BadLine], None] | None = None,
) -> ImportSummary:
    """Import every CSV file below ``root``; safe to re-run and to kill."""
    started = time.perf_counter()
    summary = ImportSummary(kind=KIND, target=str(root))
    done = imported_files(engine, KIND)
    tasks = [(name, mid, aid, str(path), done.get(name))
             for name, mid, aid, path in find_csv_files(root)]
    run_id = start_run(engine, KIND, str(root))
    workers = workers or min(os.cpu_count() or 1, 4)
    status = "failed"
    try:
        with _parsed_files(tasks, workers) as parsed_files:
            batch: list[ParsedFile] = []
            batch_size = 0
            for parsed in parsed_files:
                summary.files_seen += 1
                if parsed.state != "new":
                    if parsed.state == "skipped":
                        summary.files_skipped += 1
                    else:
                        summary.files_changed += 1
                        summary.problems.append(
                            f"{parsed.name}: changed since it was imported; not re-imported")
                    if on_file:
                        on_file(parsed.name, 0)
                    continue
                for bad in parsed.bad:
                    if strict:
                        raise StrictModeError(f"{parsed.name}:{bad.line}: {bad.reason}")
                    if on_bad:
                        on_bad(parsed.name, bad)
                batch.append(parsed)
                batch_size += len(parsed.rows)
                if batch_size >= batch_rows:
                    _commit(engine, batch, run_id, summary, on_file)
                    batch, batch_size = [], 0
            _commit(engine, batch, run_id, summary, on_file)
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        finish_run(engine, run_id, summary, status)
    return summary


@contextlib.contextmanager
def _parsed_files(tasks: list, workers: int) -> Iterator[Iterator[ParsedFile]]:
    """Ordered results of ``read_csv_file`` from worker processes, a bounded number ahead.

    At most ``IN_FLIGHT_PER_WORKER`` files per worker are parsed but not yet
    written, so memory stays flat however large the tree (``Pool.imap`` would
    queue every finished result while the writer lags behind).
    """
    if workers <= 1 or len(tasks) < 8:
        yield map(read_csv_file, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        def ordered() -> Iterator[ParsedFile]:
            pending: collections.deque = collections.deque()
            queue = iter(tasks)
            for task in itertools.islice(queue, workers * IN_FLIGHT_PER_WORKER):
                pending.append(pool.submit(read_csv_file, task))
            while pending:
                result = pending.popleft().result()
                for task in itertools.islice(queue, 1):
                    pending.append(pool.submit(read_csv_file, task))
                yield result

        try:
            yield ordered()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _commit(engine: Engine, batch: list[ParsedFile], run_id: int, summary: ImportSummary,
            on_file: Callable[[str, int], None] | None) -> None:
    if not batch:
        return
    stored: list[int] = []
    with engine.begin() as conn:
        sources = upsert_sources(conn, VIDEO_PAGE, [
            (source_key_video(p.aid, 1), f"csv:{p.name}", {"aid": p.aid, "page": 1, "uploader_mid": p.mid})
            for p in batch
        ])
        markers = []
        for parsed in batch:
            source_id, created = sources[source_key_video(parsed.aid, 1)]
            rows = parsed.rows if created else drop_already_crawled(conn, source_id, parsed.rows)
            insert_danmaku(conn, COLUMNS, [(source_id, *row) for row in rows])
            record_rejects(conn, run_id, parsed.name, parsed.bad)
            markers.append({"kind": KIND, "name": parsed.name, "size": parsed.size, "sha1": parsed.sha1,
                            "rows": len(rows), "rejected": len(parsed.bad), "run_id": run_id})
            stored.append(len(rows))
        record_files(conn, markers)
    summary.sources_created += sum(created for _, created in sources.values())
    for parsed, rows in zip(batch, stored, strict=True):
        summary.files_imported += 1
        summary.rows += rows
        summary.rejected += len(parsed.bad)
        if on_file:
            on_file(parsed.name, rows)
