"""One shard of documents -> one TFRecord file, in a worker process with its own seed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from danmaku.pretrain.instances.algorithm import FastRandom, document_instances
from danmaku.pretrain.instances.documents import tokenize_in_process, tokenizer_for
from danmaku.pretrain.instances.masking import mask_batch, spans_to_tokens
from danmaku.pretrain.instances.options import InstanceOptions
from danmaku.pretrain.instances.tfrecord import TFRecordWriter, serialize_batch
from danmaku.text.tokenizer import BertTokenizer

BATCH = 2048  # instances masked and serialised per numpy pass


@dataclass
class ShardStats:
    """What one output file holds (also the per-shard ``.json`` beside it)."""

    file: str
    instances: int = 0
    documents: int = 0
    lines: int = 0
    empty_lines: int = 0
    tokens: int = 0
    masked: int = 0
    random_next: int = 0

    def add(self, other: ShardStats) -> None:
        for name in ("instances", "documents", "lines", "empty_lines", "tokens", "masked",
                     "random_next"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ShardJob:
    docs: list[list[str]]
    out: str
    seed: tuple[int, ...]
    vocab_path: str
    opts: InstanceOptions


def special_ids(tok: BertTokenizer) -> tuple[int, int, int]:
    try:
        return tok.vocab["[CLS]"], tok.vocab["[SEP]"], tok.vocab["[MASK]"]
    except KeyError as err:
        raise ValueError(f"vocabulary {tok.vocab_path} lacks {err.args[0]}") from None


def process_shard(job: ShardJob) -> ShardStats:
    """Tokenise one shard of documents, build its instances, write its TFRecord file."""
    tok = tokenizer_for(job.vocab_path)
    cls_id, sep_id, mask_id = special_ids(tok)
    docs = tokenize_in_process(job.docs, job.vocab_path)
    seq = np.random.SeedSequence(job.seed)
    py_seed, np_seed = seq.generate_state(2)
    rng = FastRandom(int(py_seed))
    gen = np.random.default_rng(np_seed)
    stats = ShardStats(file=Path(job.out).name, documents=docs.count, lines=docs.lines,
                       empty_lines=docs.empty_lines, tokens=docs.tokens)
    spans: list[tuple[int, int, int, int, bool]] = []

    def emit(a_lo: int, a_hi: int, b_lo: int, b_hi: int, is_random: bool) -> None:
        spans.append((a_lo, a_hi, b_lo, b_hi, is_random))

    if docs.count:
        for _ in range(job.opts.dupe_factor):
            for d in range(docs.count):
                document_instances(docs, d, job.opts, rng, emit)
    table = np.asarray(spans, dtype=np.int64).reshape(-1, 5)
    table = table[gen.permutation(len(table))]
    writer = TFRecordWriter(Path(job.out))
    try:
        for start in range(0, len(table), BATCH):
            part = table[start:start + BATCH]
            tokens, segments, lengths, len_a = spans_to_tokens(
                docs.ids, part[:, :4], job.opts.max_seq_length, cls_id, sep_id)
            batch = mask_batch(tokens, segments, lengths, len_a, part[:, 4], job.opts, len(tok.vocab),
                               mask_id, gen)
            stats.masked += int(batch.masked_lm_weights.sum())
            stats.random_next += int(batch.next_sentence_labels.sum())
            writer.write_many(serialize_batch(batch))
    finally:
        writer.close()
    stats.instances = writer.records
    verify_written(Path(job.out), writer.records)
    Path(job.out + ".json").write_text(json.dumps(asdict(stats)))  # marks the shard done
    return stats


def verify_written(path: Path, records: int) -> None:
    """A shard just written reads back whole (framing, CRCs, count), before it counts as done."""
    from danmaku.pretrain.tfrecord_check import CorruptShard, verify_shards

    try:
        verify_shards([path], expected_records=records)
    except CorruptShard as err:
        raise CorruptShard(f"{err} right after it was written (a failing disk?); "
                           "run the same command again to rebuild it") from None


def intact_shard(out: Path, meta: Path) -> ShardStats | None:
    """The stats of a shard an earlier run finished, if it is still whole; None to rebuild it."""
    from danmaku.pretrain.tfrecord_check import CorruptShard, verify_shards

    try:
        stats = ShardStats(**json.loads(meta.read_text()))
        verify_shards([out], expected_records=stats.instances)
    except (CorruptShard, ValueError, TypeError):  # a damaged shard or .json
        meta.unlink()
        return None
    return stats
