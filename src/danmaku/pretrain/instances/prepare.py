"""``danmaku pretrain prepare``: a corpus folder -> an instance set (shards + ``instances.json``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from danmaku.artifacts import CORPUS_EVAL_FILE, CORPUS_TRAIN_FILE, VOCAB, InstancesManifest, sha256_file
from danmaku.pretrain.instances.documents import open_lines, read_documents, tokenize_documents, tokenizer_for
from danmaku.pretrain.instances.exact import google_exact_batch
from danmaku.pretrain.instances.masking import Batch
from danmaku.pretrain.instances.options import FEATURES, FORMAT, InstanceOptions
from danmaku.pretrain.instances.shards import (
    BATCH,
    ShardJob,
    ShardStats,
    intact_shard,
    process_shard,
    special_ids,
    verify_written,
)
from danmaku.pretrain.instances.tfrecord import TFRecordWriter, serialize_batch
from danmaku.processes import die_with_parent
from danmaku.text.tokenizer import BertTokenizer


@dataclass
class PrepareSummary:
    out_dir: Path
    splits: dict[str, ShardStats] = field(default_factory=dict)
    shards_reused: int = 0
    shards_rebuilt: list[str] = field(default_factory=list)  # kept ones that were damaged


def corpus_files(corpus: Path) -> dict[str, Path]:
    """``{"train": ..., "eval": ...}`` from a corpus directory (or a single text file)."""
    corpus = Path(corpus)
    if corpus.is_file():
        return {"train": corpus}
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    train = corpus / CORPUS_TRAIN_FILE
    if not train.is_file():
        raise FileNotFoundError(f"{corpus} has no {CORPUS_TRAIN_FILE} (the corpus export)")
    files = {"train": train}
    if (corpus / CORPUS_EVAL_FILE).is_file():
        files["eval"] = corpus / CORPUS_EVAL_FILE
    return files


def corpus_source(corpus: Path, files: dict[str, Path]) -> dict[str, Any]:
    """Where the instances came from, for model cards: the corpus path and, when the files are those
    of a ``danmaku corpus export``, its manifest (version, counts, settings) without ``provenance``
    (which names the store, possibly with credentials), so the figures survive a moved corpus."""
    from danmaku.corpus.manifest import read_manifest

    directory = corpus if corpus.is_dir() else corpus.parent
    source: dict[str, Any] = {"path": str(directory.resolve())}
    manifest = read_manifest(directory)
    if manifest is not None and all(
            manifest.get("files", {}).get(path.name, {}).get("bytes") == path.stat().st_size
            for path in files.values()):
        made = manifest.get("provenance", {})
        source["manifest"] = {k: v for k, v in manifest.items() if k != "provenance"} | {
            "created_at": made.get("created_at"), "danmaku_version": made.get("danmaku_version")}
    return source


def document_shards(path: Path, shard_bytes: int) -> Iterator[list[list[str]]]:
    """Whole documents of ``path`` in groups of about ``shard_bytes`` of text."""
    shard: list[list[str]] = []
    size = 0
    doc: list[str] = []
    for raw in open_lines(path):
        line = raw.decode("utf-8", errors="strict").strip()
        if line:
            doc.append(line)
            size += len(raw)
            continue
        if doc:
            shard.append(doc)
            doc = []
            if size >= shard_bytes:
                yield shard
                shard, size = [], 0
    if doc:
        shard.append(doc)
    if shard:
        yield shard


def prepare(corpus: Path, vocab_path: Path, out_dir: Path, *, opts: InstanceOptions | None = None,
            workers: int | None = None, shard_bytes: int = 4 << 20, google_exact: bool = False,
            progress: Callable[[str, int, ShardStats], None] | None = None) -> PrepareSummary:
    """Build train (and eval) instances of a corpus directory into ``out_dir``.

    Every shard is read back (TFRecord framing, CRCs, record count:
    ``danmaku.pretrain.tfrecord_check``) before its ``.json`` marks it done.
    Resumable: shards already written (file + ``.json``) by an identical
    earlier run are kept if they still read back whole, else rebuilt (listed in
    ``shards_rebuilt``). Raises ``ValueError`` for an empty corpus, a corpus
    that is not UTF-8, or an ``out_dir`` prepared with other options, and its
    subclass ``CorruptShard`` for a shard that does not read back once written.
    """
    opts = opts or InstanceOptions()
    files = corpus_files(corpus)
    tok = tokenizer_for(str(vocab_path))
    cls_id, sep_id, mask_id = special_ids(tok)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": FORMAT, "options": asdict(opts), "google_exact": google_exact,
        "shard_bytes": None if google_exact else shard_bytes,
        "vocab_size": len(tok.vocab), "vocab_sha256": sha256_file(Path(vocab_path)),
        "corpus": {split: {"file": path.name, "bytes": path.stat().st_size}
                   for split, path in files.items()},
    }
    InstancesManifest.require_same(out_dir, settings, settings.keys(),
                                   hint="use a new --out directory (other options or corpus)")
    summary = PrepareSummary(out_dir)
    for split_index, (split, path) in enumerate(files.items()):
        try:
            if google_exact:
                total = _prepare_exact(path, split, out_dir, opts, tok, (cls_id, sep_id, mask_id))
                if progress:
                    progress(split, 1, total)
            else:
                total = _prepare_sharded(path, split, split_index, out_dir, opts, str(vocab_path),
                                         workers, shard_bytes, summary, progress)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text: {err}") from None
        if total.instances == 0:
            raise ValueError(f"{path} yields no instances: the corpus {split} file is empty "
                             "(or has no line the vocabulary can tokenise)")
        summary.splits[split] = total
    splits = {}
    for split, stats in summary.splits.items():
        shard_files = sorted(p.name for p in out_dir.glob(f"{split}-*.tfrecord"))
        splits[split] = asdict(stats) | {"files": shard_files}
    InstancesManifest.write(out_dir, settings | {"splits": splits,
                                                 "corpus_source": corpus_source(Path(corpus), files)})
    shutil.copyfile(vocab_path, out_dir / VOCAB)  # training needs the exact vocabulary
    return summary


def _prepare_exact(path: Path, split: str, out_dir: Path, opts: InstanceOptions, tok: BertTokenizer,
                   special: tuple[int, int, int]) -> ShardStats:
    docs = tokenize_documents(read_documents(open_lines(path)), tok)
    stats = ShardStats(file=f"{split}-00000.tfrecord", documents=docs.count, lines=docs.lines,
                       empty_lines=docs.empty_lines, tokens=docs.tokens)
    if docs.count == 0:
        return stats
    batch = google_exact_batch(docs, opts, len(tok.vocab), *special)
    writer = TFRecordWriter(out_dir / stats.file)
    try:
        for start in range(0, len(batch), BATCH):
            part = Batch(*(getattr(batch, f)[start:start + BATCH] for f in FEATURES))
            writer.write_many(serialize_batch(part))
    finally:
        writer.close()
    verify_written(out_dir / stats.file, len(batch))
    stats.instances = len(batch)
    stats.masked = int(batch.masked_lm_weights.sum())
    stats.random_next = int(batch.next_sentence_labels.sum())
    return stats


def _prepare_sharded(path: Path, split: str, split_index: int, out_dir: Path, opts: InstanceOptions,
                     vocab_path: str, workers: int | None, shard_bytes: int, summary: PrepareSummary,
                     progress: Callable[[str, int, ShardStats], None] | None) -> ShardStats:
    workers = workers or os.cpu_count() or 1
    total = ShardStats(file=f"{split}-*.tfrecord")
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=die_with_parent) as pool:
        pending: set[Future[ShardStats]] = set()

        def collect() -> None:
            nonlocal pending, done
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                stats = fut.result()
                total.add(stats)
                done += 1
                if progress:
                    progress(split, done, stats)

        for index, docs in enumerate(document_shards(path, shard_bytes)):
            out = out_dir / f"{split}-{index:05d}.tfrecord"
            meta = Path(str(out) + ".json")
            finished = out.is_file() and meta.is_file()  # by an earlier run
            stats = intact_shard(out, meta) if finished else None
            if finished and stats is None:
                summary.shards_rebuilt.append(out.name)
            if stats is not None:
                total.add(stats)
                summary.shards_reused += 1
                done += 1
                if progress:
                    progress(split, done, stats)
                continue
            while len(pending) >= 2 * workers:  # bounded read-ahead: flat memory
                collect()
            job = ShardJob(docs, str(out), (opts.random_seed, split_index, index), vocab_path, opts)
            pending.add(pool.submit(process_shard, job))
        while pending:
            collect()
    return total
