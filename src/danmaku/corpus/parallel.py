"""``workers > 1``: id ranges of sources exported by separate processes from one snapshot.

The parts are joined in order, so the bytes do not depend on the number of
workers. On PostgreSQL every worker reads through the snapshot the parent
exports; on SQLite the WAL gives each reader a consistent view.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from danmaku.artifacts import CORPUS_EVAL_FILE, CORPUS_TRAIN_FILE
from danmaku.corpus.corpus_file import CorpusFile
from danmaku.corpus.documents import Counts, PartResult, ReportFn, export_part
from danmaku.corpus.export_reader import Selection, plan_parts
from danmaku.corpus.options import ExportOptions
from danmaku.processes import die_with_parent
from danmaku.text.vocab_filter import VocabFilter

# Worker processes: the progress of every part in shared memory (sources, read, kept).
_progress: Any = None


def _init_worker(progress: Any) -> None:
    global _progress
    die_with_parent()
    _progress = progress
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _part_in_worker(task: tuple) -> PartResult:
    from danmaku.store.db import make_engine

    slot, url, vocab_path, selection, options, part, paths, chunk_rows = task
    engine = make_engine(url, upgrade=False)

    def report(sources: int, read: int, kept: int) -> None:
        _progress[3 * slot:3 * slot + 3] = [sources, read, kept]

    try:
        return export_part(engine, VocabFilter(vocab_path), selection, options, part, paths,
                           chunk_rows, report)
    finally:
        engine.dispose()


def export_parallel(engine: Engine, vocab_path: Path, selection: Selection, options: ExportOptions,
                     staging: Path, workers: int, chunk_rows: int, report: ReportFn | None
                     ) -> tuple[Counts, dict[str, CorpusFile]]:
    """Export id ranges in worker processes (one snapshot), then join the parts in order."""
    postgres = engine.dialect.name == "postgresql"
    names = [CORPUS_TRAIN_FILE, CORPUS_EVAL_FILE] if options.has_eval else [CORPUS_TRAIN_FILE]
    with engine.connect() as conn:
        if postgres:
            # Held open until the workers are done: they read through its snapshot.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        else:
            snapshot = None
        parts = plan_parts(conn, workers, snapshot)
        url = engine.url.render_as_string(hide_password=False)
        tasks = [(k, url, str(vocab_path), selection, options, part,
                  {name: staging / f".part{k:03d}.{name}" for name in names}, chunk_rows)
                 for k, part in enumerate(parts)]
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        progress = ctx.Array("q", 3 * len(parts), lock=False)
        with ctx.Pool(len(parts), initializer=_init_worker, initargs=(progress,)) as pool:
            pending = pool.map_async(_part_in_worker, tasks, chunksize=1)
            while not pending.ready():
                pending.wait(0.2)
                if report:
                    report(*(sum(progress[i::3]) for i in range(3)))
            results: list[PartResult] = pending.get()
    counts = Counts()
    outputs = {name: CorpusFile(staging / name) for name in names}
    try:
        for task, result in zip(tasks, results, strict=True):
            counts.merge(result.counts)
            for name, out in outputs.items():
                info = result.files[name]
                out.append_part(task[6][name], info["documents"], info["danmaku"], info["characters"])
                task[6][name].unlink()
    except BaseException:
        for out in outputs.values():
            out.abort()
        raise
    return counts, outputs
