"""``danmaku tasks make``: labelled CSVs for a downstream task, straight from the store.

Two tasks, one per kind of source:

* ``uploader``: the text of a video danmaku -> the uploader (``mid``) of the video;
* ``room``: the text of a live chat line -> the live room it was sent in.

The store is read once in export order through ``corpus/export_reader.py``
(raw DBAPI cursors in chunks, SQLite or PostgreSQL), so memory does not grow
with the store: without a cap rows are written as they come; with
``max_per_class`` each (class, split) keeps a bounded heap of the rows with the
smallest seeded hash of ``(source key, text)`` -- a uniform sample that depends on
the seed and the data, not on ids or read order. Texts are made one line
(``corpus.export.one_line``) and, given a vocabulary, pass the corpus vocab filter
(``danmaku.text.vocab_filter.VocabFilter``) exactly as the corpus does; empty texts
are always left out. Splits are by source (``plan.py``).

Output (``OUT``): ``train.csv``, ``dev.csv``, ``test.csv`` (``text,label``),
``sources.csv`` (``key,label,split,rows``: which source went where) and
``manifest.json`` (store, selection, seed, counts per class and split, drops,
file hashes). Files are written under temporary names and renamed, the
manifest last.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import os
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from danmaku.artifacts import sha256_file
from danmaku.corpus.export_reader import Selection, read_chunks
from danmaku.corpus.lines import one_line_batch
from danmaku.store.db import redact
from danmaku.store.models import LIVE_BROADCAST, VIDEO_PAGE, Danmaku, Source
from danmaku.tasks.plan import (
    SPLITS,
    ClassChoice,
    SourceCount,
    assign_splits,
    by_owner,
    choose_classes,
    seed_salt,
    split_caps,
    split_fractions,
)
from danmaku.text.vocab_filter import REASONS

FORMAT = "danmaku-task/1"
MANIFEST = "manifest.json"
SOURCES_FILE = "sources.csv"
CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class TaskKind:
    name: str
    source_kind: str
    owner_column: Any
    label_means: str


TASKS = {
    "uploader": TaskKind("uploader", VIDEO_PAGE, Source.uploader_mid,
                         "uploader mid of the video page the danmaku was sent under"),
    "room": TaskKind("room", LIVE_BROADCAST, Source.room_id, "live room the chat line was sent in"),
}


@dataclass(frozen=True)
class TaskOptions:
    """What a task holds; the defaults make a small, balanced task.

    Args:
        choice: which classes (``--classes``, ``--min-per-class``, ``--only``).
        max_per_class: rows per class over all splits (None: every row).
        dev_fraction, test_fraction: shares of each class's rows (by source).
        seed: split and sample.
    """

    choice: ClassChoice = ClassChoice()
    max_per_class: int | None = 2000
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 12345

    def __post_init__(self) -> None:
        if self.max_per_class is not None and self.max_per_class < len(SPLITS):
            raise ValueError(f"max_per_class must be at least {len(SPLITS)} (a row per split)")
        split_fractions(self.dev_fraction, self.test_fraction)


class TaskError(RuntimeError):
    """A task that cannot be made (empty store, output in the way); the message says why."""


@dataclass
class TaskResult:
    out: Path
    manifest: dict[str, Any]


Progress = Callable[[int, int], None]
"""``(danmaku read, danmaku to read)``."""


def plan_counts(engine: Engine, kind: TaskKind) -> list[SourceCount]:
    """Every source of the task's kind with an owner, and its stored danmaku (one aggregate query)."""
    owner = kind.owner_column
    query = (select(Source.id, Source.key, owner, func.count(Danmaku.id))
             .join(Danmaku, Danmaku.source_id == Source.id)
             .where(Source.kind == kind.source_kind, owner.is_not(None))
             .group_by(Source.id, Source.key, owner).order_by(Source.id))
    with engine.connect() as conn:
        return [SourceCount(int(i), key, int(o), int(n)) for i, key, o, n in conn.execute(query)]


class _Sample:
    """The rows of one (class, split): all of them, streamed, or the ``cap`` smallest by seeded hash."""

    def __init__(self, label: str, cap: int | None, writer: Any, seed: int, tiebreak: count) -> None:
        self.label, self.cap, self.writer = label, cap, writer
        self.salt, self.tiebreak = seed_salt(seed), tiebreak
        self.heap: list[tuple[int, int, str]] = []  # (-hash, tiebreak, text): the largest on top
        self.rows = 0

    def add(self, key: str, texts: list[str]) -> None:
        """Rows of one source (its key is part of each row's hash)."""
        if self.cap is None:
            self.writer.writerows((text, self.label) for text in texts)
            self.rows += len(texts)
            return
        prefix, salt, blake2b, from_bytes = f"{key}\x00".encode(), self.salt, hashlib.blake2b, int.from_bytes
        heap, cap, tiebreak = self.heap, self.cap, self.tiebreak
        for text in texts:
            priority = from_bytes(blake2b(prefix + text.encode(), digest_size=8, salt=salt).digest(), "big")
            if len(heap) < cap:
                heapq.heappush(heap, (-priority, next(tiebreak), text))
            elif -heap[0][0] > priority:
                heapq.heapreplace(heap, (-priority, next(tiebreak), text))

    def drain(self) -> list[tuple[int, int, str, str]]:
        """(hash, tiebreak, text, label) of the kept rows (nothing when they were streamed)."""
        if self.cap is not None:
            self.rows = len(self.heap)
        return [(-p, t, text, self.label) for p, t, text in self.heap]


def make_task(engine: Engine, task: str, out: str | Path, *, options: TaskOptions | None = None,
              vocab: str | Path | None = None, force: bool = False,
              on_progress: Progress | None = None) -> TaskResult:
    """Write the CSVs, ``sources.csv`` and the manifest of ``task`` to ``out`` (module docstring).

    Raises ``TaskError`` (or ``PlanError``) with a message for the user.
    """
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    kind = TASKS[task]
    options = options or TaskOptions()
    out = Path(out)
    fractions = split_fractions(options.dev_fraction, options.test_fraction)
    counts = plan_counts(engine, kind)
    if not counts:
        raise TaskError(f"the store ({redact(engine.url.render_as_string(hide_password=False))}) holds no "
                        f"{kind.source_kind} with an owner: import data first")
    classes = choose_classes(counts, options.choice)
    groups = by_owner(counts)
    split_of: dict[int, str] = {}
    label_of: dict[int, str] = {}
    key_of: dict[int, str] = {}
    for owner in classes:
        split_of.update(assign_splits(groups[owner], fractions, options.seed))
        for source in groups[owner]:
            label_of[source.id] = str(owner)
            key_of[source.id] = source.key
    settings = _settings(task, kind, options, classes, fractions, vocab)
    _check_out(out, settings, force)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is complete, no manifest vouches for it

    vocab_filter = None
    if vocab is not None:
        from danmaku.text.vocab_filter import VocabFilter

        vocab_filter = VocabFilter(vocab)
    caps = split_caps(options.max_per_class, fractions)
    handles = {split: open(out / f".{split}.csv.tmp", "w", encoding="utf-8", newline="")  # noqa: SIM115
               for split in SPLITS}
    writers = {split: csv.writer(handle) for split, handle in handles.items()}
    for writer in writers.values():
        writer.writerow(("text", "label"))
    tiebreak = count()
    samples = {(str(owner), split): _Sample(str(owner), caps[split], writers[split], options.seed, tiebreak)
               for owner in classes for split in SPLITS}
    dropped: Counter = Counter()
    total = sum(s.rows for owner in classes for s in groups[owner])
    read = 0
    selection = (Selection(kind=kind.source_kind, uploaders=tuple(classes)) if task == "uploader"
                 else Selection(kind=kind.source_kind, rooms=tuple(classes)))
    try:
        for _sources, rows in read_chunks(engine, selection, CHUNK_ROWS):
            if not rows:
                continue
            read += len(rows)
            lines = one_line_batch([text for _, text in rows])
            ok = list(map(bool, lines))
            dropped["empty"] += ok.count(False)
            if vocab_filter is not None:
                filled = [i for i, good in enumerate(ok) if good]
                codes = vocab_filter.decide_batch([lines[i] for i in filled])
                for i, code in zip(filled, codes, strict=True):
                    if code:
                        ok[i] = False
                        dropped[REASONS[code]] += 1
            source_ids = [source_id for source_id, _ in rows]  # sorted: a source's rows are one slice
            start, n = 0, len(rows)
            while start < n:
                source_id = source_ids[start]
                end = bisect_right(source_ids, source_id, start, n)
                texts = [line for line, good in zip(lines[start:end], ok[start:end], strict=True) if good]
                if source_id not in label_of:  # a source imported after the plan was made
                    dropped["source added while reading"] += len(texts)
                else:
                    samples[(label_of[source_id], split_of[source_id])].add(key_of[source_id], texts)
                start = end
            if on_progress:
                on_progress(read, total)
        for split in SPLITS:
            kept = sorted(row for owner in classes for row in samples[(str(owner), split)].drain())
            writers[split].writerows((text, label) for _p, _t, text, label in kept)
    finally:
        for handle in handles.values():
            handle.close()
    files = {}
    for split in SPLITS:
        tmp = out / f".{split}.csv.tmp"
        rows_written = sum(samples[(str(owner), split)].rows for owner in classes)
        files[f"{split}.csv"] = {"rows": rows_written, "sha256": sha256_file(tmp)}
        os.replace(tmp, out / f"{split}.csv")
    _write_sources(out, classes, groups, split_of)
    files[SOURCES_FILE] = {"rows": len(split_of), "sha256": sha256_file(out / SOURCES_FILE)}
    manifest = {
        **settings,
        "store": redact(engine.url.render_as_string(hide_password=False)),
        "counts": {split: {str(o): samples[(str(o), split)].rows for o in classes} for split in SPLITS},
        "sources": {split: {str(o): sum(1 for s in groups[o] if split_of[s.id] == split) for o in classes}
                    for split in SPLITS},
        "stored_danmaku": {str(o): sum(s.rows for s in groups[o]) for o in classes},
        "danmaku_read": read,
        "dropped": dict(sorted(dropped.items())),
        "files": files,
    }
    manifest["rows"] = {split: sum(manifest["counts"][split].values()) for split in SPLITS}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return TaskResult(out, manifest)


def _settings(task: str, kind: TaskKind, options: TaskOptions, classes: list[int],
              fractions: dict[str, float], vocab: str | Path | None) -> dict[str, Any]:
    """The part of the manifest that decides the task (compared before overwriting one)."""
    from danmaku import __version__

    vocab_info = None
    if vocab is not None:
        vocab_info = {"path": str(vocab), "sha256": sha256_file(Path(vocab)),
                      "rule": "keep iff Google FullTokenizer(do_lower_case=True) gives >= 1 token, no [UNK]"}
    choice = options.choice
    return {
        "format": FORMAT,
        "task": task,
        "label": kind.label_means,
        "selection": {
            "source_kind": kind.source_kind, "classes": choice.classes, "min_per_class": choice.min_per_class,
            "only": sorted(choice.only), "max_per_class": options.max_per_class,
            "rule": "owners with >= 3 sources and >= min_per_class stored danmaku; the `classes` with the "
                    "most danmaku (ties: lower id), or exactly `only`",
            "chosen": [str(c) for c in classes],
        },
        "split": {
            "fractions": fractions, "by": "source",
            "rule": "sources ordered by blake2b(key, salt=seed), each to the split furthest below its share "
                    "of the class's stored danmaku; a split left without the class gets the smallest source "
                    "of the split with the most sources",
            "sample": "per class and split, the max_per_class share with the smallest "
                      "blake2b(source key NUL text, salt=seed)" if options.max_per_class else "every row",
        },
        "seed": options.seed,
        "text": "one_line (tabs and line breaks -> space, strip); empty texts left out",
        "vocab": vocab_info,
        "danmaku_version": __version__,
    }


def _check_out(out: Path, settings: dict[str, Any], force: bool) -> None:
    existing = out / MANIFEST
    if existing.is_file() and not force:
        old = json.loads(existing.read_text(encoding="utf-8"))
        differ = [k for k in settings if k != "danmaku_version" and old.get(k) != settings[k]]
        if differ:
            raise TaskError(f"{out} holds a task made with other {', '.join(differ)}; use --force to "
                            "replace it or another --out")
    elif out.exists() and not out.is_dir():
        raise TaskError(f"{out} exists and is not a directory")


def _write_sources(out: Path, classes: list[int], groups: dict[int, list[SourceCount]],
                   split_of: dict[int, str]) -> None:
    tmp = out / f".{SOURCES_FILE}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("key", "label", "split", "stored_danmaku"))
        for owner in classes:
            for source in sorted(groups[owner], key=lambda s: s.key):
                writer.writerow((source.key, owner, split_of[source.id], source.rows))
    os.replace(tmp, out / SOURCES_FILE)
