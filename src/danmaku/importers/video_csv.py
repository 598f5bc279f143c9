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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from danmaku.importers.parsers import BadLine, parse_video_csv
from danmaku.importers.run import (
    ImportSummary,
    StrictModeError,
    file_problem,
    import_run,
    list_folder,
    read_file,
    sha1_of,
)
from danmaku.processes import die_with_parent
from danmaku.store.models import VIDEO_PAGE
from danmaku.store.writes import (
    drop_already_crawled,
    imported_files,
    insert_danmaku,
    max_danmaku_chars,
    record_files,
    record_rejects,
    source_key_video,
    upsert_sources,
)

KIND = "video_csv"
DEFAULT_BATCH_ROWS = 100_000
COLUMNS = ("source_id", "text", "position_ms", "sent_at_ms")
IN_FLIGHT_PER_WORKER = 16


@dataclass
class ParsedFile:
    """One file after a worker read it: its rows, or why it was skipped or failed."""

    name: str
    mid: int
    aid: int
    size: int
    sha1: str
    state: str  # "new", "skipped" (same content imported), "changed", "failed" (unreadable)
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def find_csv_files(root: Path) -> tuple[list[tuple[str, int, int, Path]], list[tuple[str, str]]]:
    """((name, mid, aid, path) of every ``{mid}/{aid}.csv`` below root, sorted; (folder, reason)
    of every uploader folder that cannot be listed).

    ``root`` may be the tree or a single uploader's folder. Entries are listed by
    name only: whether each is a readable file is found out when it is read.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    top, problem = list_folder(root)
    if problem:
        raise PermissionError(f"{root} cannot be listed: {problem}")
    if root.name.isdigit() and any(p.suffix == ".csv" for p in top):
        folders = [root]
    else:
        folders = [p for p in top if p.name.isdigit() and p.is_dir()]
    files: list[tuple[str, int, int, Path]] = []
    problems: list[tuple[str, str]] = []
    for folder in folders:
        entries, problem = list_folder(folder, "*.csv")
        if problem:
            problems.append((f"{folder.name}/", problem))
        for path in entries:
            if path.stem.isdigit():
                files.append((f"{folder.name}/{path.name}", int(folder.name), int(path.stem), path))
    return files, problems


def read_csv_file(task: tuple[str, int, int, str, str | None, int]) -> ParsedFile:
    """Worker: read one file, compare with what is stored, parse it if new."""
    name, mid, aid, path, known_sha1, max_chars = task
    data, problem = read_file(Path(path))
    if data is None:
        return ParsedFile(name, mid, aid, 0, "", "failed", bad=[file_problem(problem, name)])
    sha1 = sha1_of(data)
    parsed = ParsedFile(name, mid, aid, len(data), sha1, "new")
    if known_sha1 is not None:
        parsed.state = "skipped" if known_sha1 == sha1 else "changed"
        return parsed
    for item in parse_video_csv(data, max_chars=max_chars):
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
    max_chars: int | None = None,
    on_file: Callable[[str, int], None] | None = None,
    on_bad: Callable[[str, BadLine], None] | None = None,
) -> ImportSummary:
    """Import every CSV file below ``root``; safe to re-run, to kill and to run twice at once.

    An entry that cannot be read (unreadable, a broken or looping link, a
    folder) and an uploader folder that cannot be listed are rejects of line 0
    and counted in ``files_failed``; the import goes on (``strict``: it stops).
    """
    found, folder_problems = find_csv_files(root)
    done = imported_files(engine, KIND)
    limit = max_chars or max_danmaku_chars()
    tasks = [(name, mid, aid, str(path), done.get(name), limit) for name, mid, aid, path in found]
    workers = workers or min(os.cpu_count() or 1, 4)
    with import_run(engine, KIND, str(root)) as (summary, run_id):
        if folder_problems:
            if strict:
                raise StrictModeError(f"{folder_problems[0][0]}: {folder_problems[0][1]}")
            with engine.begin() as conn:
                for folder, reason in folder_problems:
                    record_rejects(conn, run_id, folder, [file_problem(reason, folder)])
                    summary.files_failed += 1
                    summary.rejected += 1
                    summary.problem(f"{folder}: {reason}; its files were not imported")
        with _parsed_files(tasks, workers) as parsed_files:
            batch: list[ParsedFile] = []
            batch_size = 0
            for parsed in parsed_files:
                summary.files_seen += 1
                if parsed.state in ("skipped", "changed"):
                    if parsed.state == "skipped":
                        summary.files_skipped += 1
                    else:
                        summary.files_changed += 1
                        summary.problem(f"{parsed.name}: changed since it was imported; not re-imported")
                    if on_file:
                        on_file(parsed.name, 0)
                    continue
                if parsed.state == "failed":
                    reason = parsed.bad[0].reason
                    if strict:
                        raise StrictModeError(f"{parsed.name}: {reason}")
                    summary.files_failed += 1
                    summary.problem(f"{parsed.name}: {reason}; not imported")
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
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                initializer=die_with_parent) as pool:
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
    """Store a batch with its markers in one transaction.

    Another import of the same tree running at the same time may commit some of
    these files first: the markers' unique key then refuses the batch, which is
    rolled back and stored again without the files the other import holds.
    """
    if not batch:
        return
    try:
        stored, created = _store_batch(engine, batch, run_id)
    except IntegrityError:
        done = imported_files(engine, KIND)
        taken = [p for p in batch if p.state == "new" and p.name in done]
        batch = [p for p in batch if not (p.state == "new" and p.name in done)]
        summary.files_skipped += len(taken)
        for parsed in taken:
            if on_file:
                on_file(parsed.name, 0)
        stored, created = _store_batch(engine, batch, run_id) if batch else ([], 0)
    summary.sources_created += created
    for parsed, rows in zip(batch, stored, strict=True):
        if parsed.state == "new":
            summary.files_imported += 1
        summary.rows += rows
        summary.rejected += len(parsed.bad)
        if on_file:
            on_file(parsed.name, rows)


def _store_batch(engine: Engine, batch: list[ParsedFile], run_id: int) -> tuple[list[int], int]:
    """(rows stored per file, sources created) of one committed batch."""
    readable = [p for p in batch if p.state == "new"]
    stored: list[int] = []
    with engine.begin() as conn:
        sources = upsert_sources(conn, VIDEO_PAGE, [
            (source_key_video(p.aid, 1), f"csv:{p.name}", {"aid": p.aid, "page": 1, "uploader_mid": p.mid})
            for p in readable
        ]) if readable else {}
        markers = []
        for parsed in batch:
            record_rejects(conn, run_id, parsed.name, parsed.bad)
            if parsed.state != "new":
                stored.append(0)  # unreadable: its reject only, no marker, so a re-run tries again
                continue
            source_id, created = sources[source_key_video(parsed.aid, 1)]
            rows = parsed.rows if created else drop_already_crawled(conn, source_id, parsed.rows)
            insert_danmaku(conn, COLUMNS, [(source_id, *row) for row in rows])
            markers.append({"kind": KIND, "name": parsed.name, "size": parsed.size, "sha1": parsed.sha1,
                            "rows": len(rows), "rejected": len(parsed.bad), "run_id": run_id})
            stored.append(len(rows))
        record_files(conn, markers)
    return stored, sum(created for _, created in sources.values())
