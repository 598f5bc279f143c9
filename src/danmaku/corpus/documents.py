"""Rows of the store -> documents: one source is one document of its kept danmaku.

Speed: per chunk of rows, everything but the documents' bookkeeping runs in
C-level ``map``/``compress``/``bisect``. A whole-text decision cache was
measured and dropped: 59% of danmaku texts repeat, but a dict of millions of
texts costs more in lookups than the decisions it saves (within a 20 k-row
chunk only 29% repeat, and deduplicating those did not pay either).
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter, not_
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from danmaku.artifacts import CORPUS_EVAL_FILE, CORPUS_TRAIN_FILE
from danmaku.corpus.corpus_file import CorpusFile
from danmaku.corpus.export_reader import Part, Selection, SourceRow, read_chunks
from danmaku.corpus.lines import one_line_batch
from danmaku.corpus.options import ExportOptions, goes_to_eval
from danmaku.text.vocab_filter import NO_TOKENS, REASONS, UNK, VocabFilter

DEFAULT_CHUNK_ROWS = 20_000


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


class DocumentBuilder:
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


@dataclass
class PartResult:
    counts: Counts
    files: dict[str, dict[str, Any]]  # file name -> CorpusFile.summary()


ReportFn = Callable[[int, int, int], None]
"""report(sources_done, danmaku_read, danmaku_kept), called after every chunk."""


def export_part(engine: Engine, vocab_filter: VocabFilter, selection: Selection,
                options: ExportOptions, part: Part, paths: dict[str, Path],
                chunk_rows: int = DEFAULT_CHUNK_ROWS, report: ReportFn | None = None) -> PartResult:
    """Export one range of sources into ``paths`` (the train file, and the eval file with a split)."""
    train = CorpusFile(paths[CORPUS_TRAIN_FILE])
    eval_ = CorpusFile(paths[CORPUS_EVAL_FILE]) if CORPUS_EVAL_FILE in paths else None
    gc_was_enabled = gc.isenabled()
    try:
        exporter = DocumentBuilder(vocab_filter, options, train, eval_)
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
        files = {CORPUS_TRAIN_FILE: train.summary(train.close())}
        if eval_ is not None:
            files[CORPUS_EVAL_FILE] = eval_.summary(eval_.close())
        return PartResult(exporter.counts, files)
    except BaseException:
        train.abort()
        if eval_ is not None:
            eval_.abort()
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
