"""``danmaku corpus export``: the store -> ``danmaku_text_pure.txt``, one ordered pass.

The output is the input format of Google's ``create_pretraining_data.py``
(``../shared/docs/data-formats.md`` §3): one danmaku per line, an empty line
between documents. One document is one source (video page or live broadcast)
with at least one kept danmaku; documents come in ``source.id`` order and
danmaku in ``(sent_at_ms, id)`` order (``corpus/export_reader.py``). The only
change made to a text is making it one line (``one_line``); the vocab filter
(``corpus/vocab_filter.py``) then decides on exactly that line, so the file
holds no line that Google's tokenizer would turn into an ``[UNK]`` or nothing.

Modules, in the order a row passes them: ``export_reader`` (the ordered scan),
``lines`` (one line per danmaku), ``documents`` (the filter and the options
per document, ``options``), ``corpus_file`` (bytes and sha256), ``parallel``
(``workers > 1``), ``manifest`` (the version); this module runs them and puts
the finished corpus in place.

Output goes to a hidden staging directory that is renamed into place only
after every file and the manifest are complete (``corpus/manifest.py``): an
interrupted export never leaves a corpus that looks finished.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from danmaku.artifacts import (
    CORPUS_EVAL_FILE,
    CORPUS_TRAIN_FILE,
    clean_stale_staging,
    fsync_dir,
    sha256_file,
    staging_dir,
)
from danmaku.corpus import manifest as mf
from danmaku.corpus.documents import DEFAULT_CHUNK_ROWS, Counts, ReportFn, export_part
from danmaku.corpus.export_reader import WHOLE, Selection, count_sources
from danmaku.corpus.options import KIND_OPTIONS, ExportOptions
from danmaku.corpus.parallel import export_parallel
from danmaku.text.vocab_filter import VocabFilter

__all__ = ["KIND_OPTIONS", "ExportError", "ExportOptions", "ExportResult", "Selection", "export_corpus"]


class ExportError(RuntimeError):
    """A user-facing problem (empty selection, existing output, ...): no traceback."""


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    created: bool  # False: an identical corpus was already there
    seconds: float


def export_corpus(
    engine: Engine,
    vocab_path: str | Path,
    *,
    out: str | Path | None = None,
    root: str | Path = "corpora",
    name: str | None = None,
    selection: Selection | None = None,
    options: ExportOptions | None = None,
    force: bool = False,
    workers: int = 1,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: ReportFn | None = None,
) -> ExportResult:
    """Export the selected sources to ``out`` (default ``root/<version>``), atomically.

    Raises ``ExportError`` for what a user can fix (empty selection, another
    corpus at ``out``, nothing kept), ``FileNotFoundError`` for a missing vocab.
    """
    started = time.perf_counter()
    selection = selection or Selection()
    options = options or ExportOptions()
    vocab_path = Path(vocab_path)
    vocab_filter = VocabFilter(vocab_path)  # FileNotFoundError before any work
    target = Path(out) if out is not None else None
    if target is not None:
        _check_target(target)
    if count_sources(engine, selection) == 0:
        raise ExportError("the selection holds no source: nothing to export "
                          "(check --kind/--uploader/--room, or import data first)")
    parent = target.parent if target is not None else Path(root)
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(parent)
    staging = staging_dir(parent, "export")
    try:
        if workers > 1:
            counts, outputs = export_parallel(engine, vocab_path, selection, options, staging,
                                               workers, chunk_rows, on_progress)
            files = {name: out.summary(out.close()) for name, out in outputs.items()}
        else:
            paths = {CORPUS_TRAIN_FILE: staging / CORPUS_TRAIN_FILE}
            if options.has_eval:
                paths[CORPUS_EVAL_FILE] = staging / CORPUS_EVAL_FILE
            result = export_part(engine, vocab_filter, selection, options, WHOLE, paths, chunk_rows,
                                 on_progress)
            counts, files = result.counts, result.files
        _check_documents(counts, files)
        manifest = mf.build_manifest(
            name=name, files=files, selection=selection.as_manifest(), options=options.as_manifest(),
            counts=counts.as_manifest(files), vocab_path=vocab_path,
            vocab_sha256=sha256_file(vocab_path), vocab_tokens=len(vocab_filter.tokenizer),
            store=engine.url.render_as_string(hide_password=True),
            seconds=time.perf_counter() - started,
        )
        mf.write_manifest(staging, manifest)
        final = target if target is not None else Path(root) / manifest["version"]
        created = _publish(staging, final, manifest, force)
        return ExportResult(final, manifest if created else mf.read_manifest(final), created,
                            time.perf_counter() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_documents(counts: Counts, files: dict[str, dict[str, Any]]) -> None:
    train = files[CORPUS_TRAIN_FILE]["documents"]
    evals = files[CORPUS_EVAL_FILE]["documents"] if CORPUS_EVAL_FILE in files else None
    if train == 0 and not evals:
        raise ExportError(f"no danmaku kept from {counts.danmaku_read:,} read: nothing to export "
                          "(see the vocab and the options)")
    if evals == 0:
        raise ExportError("the eval split is empty: no selected source matches --eval-rooms / "
                          "--eval-fraction")
    if train == 0:
        raise ExportError("every document went to the eval split: the training file would be empty")


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / mf.MANIFEST).is_file():
        raise ExportError(f"{target} is a non-empty directory that is not a corpus; choose another --out")


def _publish(staging: Path, final: Path, manifest: dict[str, Any], force: bool) -> bool:
    """Rename the finished staging dir to ``final``; False if an identical corpus is there."""
    if final.is_dir() and any(final.iterdir()):
        existing = mf.read_manifest(final)
        if existing is not None and mf.same_content(existing, manifest):
            return False
        if not force:
            version = existing["version"] if existing else "?"
            raise ExportError(f"{final} holds another corpus (version {version}); "
                              "use --force to replace it or choose another --out")
        trash = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        try:
            os.replace(staging, final)
        except OSError:
            # Another export finished the same version first: fine if it is this corpus.
            existing = mf.read_manifest(final)
            if existing is None or not mf.same_content(existing, manifest):
                raise
            return False
    fsync_dir(final.parent)
    return True
