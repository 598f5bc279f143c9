"""``danmaku corpus export``: the store -> ``danmaku_text_pure.txt``, one ordered pass.

The output is the input format of Google's ``create_pretraining_data.py``
(``../shared/docs/data-formats.md`` §3): one danmaku per line, an empty line
between documents. One document is one source (video page or live broadcast)
with at least one kept danmaku; documents come in ``source.id`` order and
danmaku in ``(sent_at_ms, id)`` order (``corpus/export_reader.py``). The only
change made to a text is making it one line (``one_line``); the vocab filter
(``corpus/vocab_filter.py``) then decides on exactly that line, so the file
holds no line that Google's tokenizer would turn into an ``[UNK]`` or nothing.

Speed: per chunk of rows, everything but the documents' bookkeeping runs in
C-level ``map``/``compress``/``groupby``. A whole-text decision cache was
measured and dropped: 59% of danmaku texts repeat, but a dict of millions of
texts costs more in lookups than the decisions it saves (within a 20 k-row
chunk only 29% repeat, and deduplicating those did not pay either).
``workers > 1`` splits the sources into id ranges exported by separate
processes from one snapshot; the parts are joined in order, so the bytes do
not depend on the number of workers.

Output goes to a hidden staging directory that is renamed into place only
after every file and the manifest are complete (``corpus/manifest.py``): an
interrupted export never leaves a corpus that looks finished.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import re
import shutil
import time
import uuid
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, compress
from operator import itemgetter, not_
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from danmaku.artifacts import CORPUS_EVAL_FILE, CORPUS_TRAIN_FILE, clean_stale_staging, staging_dir
from danmaku.corpus import manifest as mf
from danmaku.corpus.export_reader import (
    WHOLE,
    Part,
    Selection,
    SourceRow,
    count_sources,
    plan_parts,
    read_chunks,
)
from danmaku.processes import die_with_parent
from danmaku.store.models import LIVE_BROADCAST, VIDEO_PAGE
from danmaku.text.vocab_filter import NO_TOKENS, REASONS, UNK, VocabFilter

__all__ = ["ExportError", "ExportOptions", "ExportResult", "Selection", "export_corpus", "one_line"]

TRAIN_FILE = CORPUS_TRAIN_FILE
EVAL_FILE = CORPUS_EVAL_FILE
KIND_OPTIONS = {"video": VIDEO_PAGE, "live": LIVE_BROADCAST}
DEFAULT_CHUNK_ROWS = 20_000

# Every character ``str.splitlines`` breaks at, and the tab: any line reader
# (Google's, Python's, HF datasets') must see one danmaku as one line.
_LINE_BREAKS = re.compile("[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class ExportError(RuntimeError):
    """A user-facing problem (empty selection, existing output, ...): no traceback."""


def one_line(text: str) -> str:
    """The text as one line: line breaks and tabs become spaces, ends stripped."""
    return _LINE_BREAKS.sub(" ", text.strip())


def one_line_batch(texts: list[str]) -> list[str]:
    """``one_line`` of each text; only texts with an inner break pay for the regex."""
    lines = list(map(str.strip, texts))
    joined = "\x00".join(lines)
    if _LINE_BREAKS.search(joined) is None:
        return lines
    ends = list(accumulate(map((1).__add__, map(len, lines))))  # one past each separator
    for i in {bisect_right(ends, m.start()) for m in _LINE_BREAKS.finditer(joined)}:
        lines[i] = _LINE_BREAKS.sub(" ", lines[i])
    return lines


@dataclass(frozen=True)
class ExportOptions:
    """How the corpus is cut and trimmed; the defaults reproduce the study.

    Args:
        eval_fraction: share of sources (by a hash of the source key, so a
            source never changes side when the store grows) in the eval file.
        eval_rooms: live rooms whose broadcasts all go to the eval file.
        min_danmaku_per_doc: documents with fewer kept danmaku are left out.
        collapse_repeats: a danmaku equal to the one kept just before it in the
            same document is left out.
        max_chars: danmaku longer than this (characters of the line) are left out.
    """

    eval_fraction: float = 0.0
    eval_rooms: tuple[int, ...] = ()
    min_danmaku_per_doc: int = 1
    collapse_repeats: bool = False
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.min_danmaku_per_doc < 1:
            raise ValueError("min_danmaku_per_doc must be at least 1")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError("max_chars must be positive")

    @property
    def has_eval(self) -> bool:
        return self.eval_fraction > 0 or bool(self.eval_rooms)

    def as_manifest(self) -> dict[str, Any]:
        return {
            "eval_fraction": self.eval_fraction, "eval_rooms": sorted(self.eval_rooms),
            "eval_rule": "int(sha256(source key)[:8 bytes]) / 2**64 < eval_fraction, "
                         "or a live broadcast of eval_rooms",
            "min_danmaku_per_doc": self.min_danmaku_per_doc,
            "collapse_repeats": self.collapse_repeats, "max_chars": self.max_chars,
            "one_line": "tabs and line breaks -> space, strip",
            "vocab_filter": "keep iff Google FullTokenizer(do_lower_case=True) gives >= 1 token, no [UNK]",
            "document_order": "source.id", "danmaku_order": "sent_at_ms, id",
        }


def eval_hash(key: str) -> float:
    """A source key's place in [0, 1): the first 8 bytes of its sha256."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def goes_to_eval(key: str, kind: str, room_id: int | None, options: ExportOptions) -> bool:
    if kind == LIVE_BROADCAST and room_id is not None and room_id in options.eval_rooms:
        return True
    return options.eval_fraction > 0 and eval_hash(key) < options.eval_fraction


# --------------------------------------------------------------------------- writing


class CorpusFile:
    """One output text file: documents in, bytes + sha256 + counts out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "wb")  # noqa: SIM115 -- closed in close()
        self._sha = hashlib.sha256()
        self._parts: list[str] = []
        self._size = 0
        self.bytes = 0
        self.documents = 0
        self.lines = 0
        self.characters = 0

    def start_document(self) -> None:
        if self.documents:
            self._parts.append("\n")
        self.documents += 1

    def add_lines(self, lines: list[str]) -> None:
        self._parts.append("\n".join(lines))
        self._parts.append("\n")
        self.lines += len(lines)
        n = sum(map(len, lines))
        self.characters += n
        self._size += n
        if self._size > 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data = "".join(self._parts).encode("utf-8")
            self._parts.clear()
            self._size = 0
            self._write(data)

    def close(self) -> str:
        """Flush, fsync, close; returns the sha256."""
        self.flush()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self._sha.hexdigest()

    def append_part(self, path: Path, documents: int, lines: int, characters: int) -> None:
        """Append a part written by a worker (its documents, in order), hashing as it goes."""
        if not documents:
            return
        self.flush()
        if self.documents:
            self._write(b"\n")
        with open(path, "rb") as part:
            while block := part.read(1 << 22):
                self._write(block)
        self.documents += documents
        self.lines += lines
        self.characters += characters

    def _write(self, data: bytes) -> None:
        self._sha.update(data)
        self._handle.write(data)
        self.bytes += len(data)

    def abort(self) -> None:
        self._handle.close()

    def summary(self, sha256: str | None = None) -> dict[str, Any]:
        return {"sha256": sha256, "bytes": self.bytes, "documents": self.documents,
                "danmaku": self.lines, "characters": self.characters}


@dataclass
class Counts:
    """What the export saw and did; becomes the manifest's ``counts``."""

    sources_selected: int = 0
    sources_by_kind: dict[str, int] = field(default_factory=dict)
    sources_without_document: int = 0
    documents_by_kind: dict[str, int] = field(default_factory=dict)
    danmaku_read: int = 0
    danmaku_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def merge(self, other: Counts) -> None:
        self.sources_selected += other.sources_selected
        self.sources_without_document += other.sources_without_document
        self.danmaku_read += other.danmaku_read
        self.danmaku_kept += other.danmaku_kept
        for mine, theirs in ((self.sources_by_kind, other.sources_by_kind),
                             (self.documents_by_kind, other.documents_by_kind),
                             (self.dropped, other.dropped)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n

    def as_manifest(self, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        dropped = sum(self.dropped.values())
        return {
            "sources_selected": self.sources_selected,
            "sources_by_kind": dict(sorted(self.sources_by_kind.items())),
            "documents": sum(f["documents"] for f in files.values()),
            "documents_by_file": {name: f["documents"] for name, f in files.items()},
            "documents_by_kind": dict(sorted(self.documents_by_kind.items())),
            "sources_without_document": self.sources_without_document,
            "danmaku_read": self.danmaku_read,
            "danmaku_kept": self.danmaku_kept,
            "danmaku_dropped": dropped,
            "dropped_by_reason": dict(sorted(self.dropped.items())),
            "characters": sum(f["characters"] for f in files.values()),
        }


class _Document:
    """The document being written: its source, file, and what is held back for options."""

    __slots__ = ("source", "out", "held", "started", "last", "kept")

    def __init__(self, source: SourceRow, out: CorpusFile) -> None:
        self.source, self.out = source, out
        self.held: list[str] = []
        self.started = False
        self.last: str | None = None
        self.kept = 0


class _Exporter:
    """Turns (sources, rows) chunks into documents in one or two ``CorpusFile``s."""

    def __init__(self, vocab_filter: VocabFilter, options: ExportOptions, train: CorpusFile,
                 eval_: CorpusFile | None) -> None:
        self.filter, self.options = vocab_filter, options
        self.train, self.eval = train, eval_
        self.counts = Counts()
        self.sources: deque[SourceRow] = deque()  # selected, not yet reached, in id order
        self.doc: _Document | None = None
        self.sources_done = 0

    # -- sources
    def add_sources(self, sources: list[SourceRow]) -> None:
        for s in sources:
            self.counts.sources_selected += 1
            self.counts.sources_by_kind[s.kind] = self.counts.sources_by_kind.get(s.kind, 0) + 1
            self.sources.append(s)

    def _open(self, source_id: int) -> _Document:
        self._close()
        # Sources before this one had no rows in the selection: no document.
        while self.sources and self.sources[0].id != source_id:
            self._finish_source(self.sources.popleft(), documented=False)
        if not self.sources:
            raise RuntimeError(f"danmaku of source {source_id}, which the source query did not return")
        source = self.sources.popleft()
        out = self.train
        if self.eval is not None and goes_to_eval(source.key, source.kind, source.room_id, self.options):
            out = self.eval
        self.doc = _Document(source, out)
        return self.doc

    def _close(self) -> None:
        doc, self.doc = self.doc, None
        if doc is None:
            return
        if not doc.started and doc.held:
            self.counts.drop("small_document", len(doc.held))
            self.counts.danmaku_kept -= len(doc.held)
        self._finish_source(doc.source, documented=doc.started)

    def _finish_source(self, source: SourceRow, documented: bool) -> None:
        self.sources_done += 1
        if documented:
            self.counts.documents_by_kind[source.kind] = self.counts.documents_by_kind.get(source.kind, 0) + 1
        else:
            self.counts.sources_without_document += 1

    def finish(self) -> None:
        self._close()
        for source in self.sources:
            self._finish_source(source, documented=False)
        self.sources.clear()

    # -- danmaku
    def add_rows(self, rows: list[tuple[int, str]]) -> None:
        lines = one_line_batch(list(map(itemgetter(1), rows)))
        codes = self.filter.decide_batch(lines)
        self.counts.danmaku_read += len(rows)
        source_ids = list(map(itemgetter(0), rows))  # sorted: a source's rows are one slice
        start, n = 0, len(rows)
        while start < n:
            source_id = source_ids[start]
            end = bisect_right(source_ids, source_id, start, n)
            doc = self.doc
            if doc is None or doc.source.id != source_id:
                doc = self._open(source_id)
            self._add_part(doc, lines[start:end], codes[start:end])
            start = end

    def _add_part(self, doc: _Document, lines: list[str], codes: list[int]) -> None:
        counts, options = self.counts, self.options
        kept = list(compress(lines, map(not_, codes)))  # KEEP == 0
        if len(kept) != len(lines):
            counts.drop(REASONS[NO_TOKENS], codes.count(NO_TOKENS))
            counts.drop(REASONS[UNK], codes.count(UNK))
        if options.max_chars is not None:
            limit = options.max_chars
            short = [line for line in kept if len(line) <= limit]
            counts.drop("too_long", len(kept) - len(short))
            kept = short
        if options.collapse_repeats and kept:
            collapsed: list[str] = []
            last = doc.last
            for line in kept:
                if line != last:
                    collapsed.append(line)
                    last = line
            doc.last = last
            counts.drop("repeat", len(kept) - len(collapsed))
            kept = collapsed
        if not kept:
            return
        counts.danmaku_kept += len(kept)
        doc.kept += len(kept)
        if not doc.started:
            if doc.kept < options.min_danmaku_per_doc:
                doc.held.extend(kept)
                return
            kept = doc.held + kept if doc.held else kept
            doc.held = []
            doc.started = True
            doc.out.start_document()
        doc.out.add_lines(kept)


# --------------------------------------------------------------------------- one part


@dataclass
class PartResult:
    counts: Counts
    files: dict[str, dict[str, Any]]  # file name -> CorpusFile.summary()


ReportFn = Callable[[int, int, int], None]
"""report(sources_done, danmaku_read, danmaku_kept), called after every chunk."""


def export_part(engine: Engine, vocab_filter: VocabFilter, selection: Selection,
                options: ExportOptions, part: Part, paths: dict[str, Path],
                chunk_rows: int = DEFAULT_CHUNK_ROWS, report: ReportFn | None = None) -> PartResult:
    """Export one range of sources into ``paths`` (TRAIN_FILE, and EVAL_FILE with a split)."""
    train = CorpusFile(paths[TRAIN_FILE])
    eval_ = CorpusFile(paths[EVAL_FILE]) if EVAL_FILE in paths else None
    gc_was_enabled = gc.isenabled()
    try:
        exporter = _Exporter(vocab_filter, options, train, eval_)
        # Millions of short-lived row tuples would set off the cyclic GC again
        # and again; nothing here makes reference cycles.
        gc.disable()
        for sources, rows in read_chunks(engine, selection, chunk_rows, part):
            exporter.add_sources(sources)
            if rows:
                exporter.add_rows(rows)
            if report:
                report(exporter.sources_done, exporter.counts.danmaku_read, exporter.counts.danmaku_kept)
        exporter.finish()
        if report:
            report(exporter.sources_done, exporter.counts.danmaku_read, exporter.counts.danmaku_kept)
        files = {TRAIN_FILE: train.summary(train.close())}
        if eval_ is not None:
            files[EVAL_FILE] = eval_.summary(eval_.close())
        return PartResult(exporter.counts, files)
    except BaseException:
        train.abort()
        if eval_ is not None:
            eval_.abort()
        raise
    finally:
        if gc_was_enabled:
            gc.enable()


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


def _export_parallel(engine: Engine, vocab_path: Path, selection: Selection, options: ExportOptions,
                     staging: Path, workers: int, chunk_rows: int, report: ReportFn | None
                     ) -> tuple[Counts, dict[str, CorpusFile]]:
    """Export id ranges in worker processes (one snapshot), then join the parts in order."""
    postgres = engine.dialect.name == "postgresql"
    names = [TRAIN_FILE, EVAL_FILE] if options.has_eval else [TRAIN_FILE]
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


# --------------------------------------------------------------------------- the command


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
            counts, outputs = _export_parallel(engine, vocab_path, selection, options, staging,
                                               workers, chunk_rows, on_progress)
            files = {name: out.summary(out.close()) for name, out in outputs.items()}
        else:
            paths = {TRAIN_FILE: staging / TRAIN_FILE}
            if options.has_eval:
                paths[EVAL_FILE] = staging / EVAL_FILE
            result = export_part(engine, vocab_filter, selection, options, WHOLE, paths, chunk_rows,
                                 on_progress)
            counts, files = result.counts, result.files
        _check_documents(counts, files)
        manifest = mf.build_manifest(
            name=name, files=files, selection=selection.as_manifest(), options=options.as_manifest(),
            counts=counts.as_manifest(files), vocab_path=vocab_path,
            vocab_sha256=mf.sha256_file(vocab_path), vocab_tokens=len(vocab_filter.tokenizer),
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
    train = files[TRAIN_FILE]["documents"]
    evals = files[EVAL_FILE]["documents"] if EVAL_FILE in files else None
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
    mf.fsync_dir(final.parent)
    return True
