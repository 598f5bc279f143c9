"""Pretraining instances: Google's ``create_pretraining_data`` algorithm, sharded and streaming.

Input is Google's format (one sentence -- here one danmaku -- per line, a blank
line between documents); output is TFRecord shards of ``tf.train.Example`` in
Google's feature layout (``input_ids``, ``input_mask``, ``segment_ids``,
``masked_lm_positions``, ``masked_lm_ids``, ``masked_lm_weights``,
``next_sentence_labels``), so Google's ``run_pretraining.py`` could read them and
``pretrain/data.py`` reads them with tf.data alone.

The algorithm is Google's, step for step: per document (dupe_factor times),
pack sentences up to a target length (10% of documents get a random shorter
target), split the chunk into A and B, replace B by a random span of another
document half the time (putting the unused sentences back), trim the longer of
A/B at a random end, then mask 15% of the tokens (at most 20) with 80% [MASK],
10% kept, 10% a random vocabulary word.

Two modes:

* ``google_exact=True`` reproduces Google's script for a seed exactly (the same
  ``tf.train.Example`` records in the same order): one
  Python ``random.Random`` consumed in Google's order, the whole corpus in
  memory, one output file in Google's instance order.
* default: the corpus is cut into shards of whole documents, each worker
  process handles a shard with its own seed (``SeedSequence([seed, split,
  shard])``), random-next documents are drawn from the same shard, and the
  masking and serialisation are vectorised with numpy over batches of
  instances. Memory stays flat: the main process only reads lines ahead by a
  bounded number of shards. Same distribution, different random stream.

Both share the span arithmetic of Google's ``create_instances_from_document``:
a document is a list of sentence offsets into one flat token array, so A and B
are ``[lo, hi)`` ranges and no token lists are built until the batch is
written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from danmaku.text.tokenizer import BertTokenizer

FORMAT = "danmaku-pretrain-instances/1"
MANIFEST = "instances.json"
TRAIN_FILE = "danmaku_text_pure.txt"
EVAL_FILE = "danmaku_text_pure.eval.txt"
FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights", "next_sentence_labels")
_BATCH = 2048  # instances masked and serialised per numpy pass


@dataclass(frozen=True)
class InstanceOptions:
    """Google's ``create_pretraining_data.py`` flags, with its defaults."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    random_seed: int = 12345

    def __post_init__(self) -> None:
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length must be at least 8, got {self.max_seq_length}")
        if not 0 < self.masked_lm_prob < 1:
            raise ValueError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.max_predictions_per_seq < 1 or self.dupe_factor < 1:
            raise ValueError("max_predictions_per_seq and dupe_factor must be positive")


# ---------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------
@dataclass
class Documents:
    """Tokenised documents as offsets into one flat id array.

    ``sent_off[s]:sent_off[s+1]`` are the token ids of sentence ``s``;
    ``doc_sent[d]:doc_sent[d+1]`` the sentences of document ``d``.
    """

    ids: np.ndarray
    sent_off: list[int]
    doc_sent: list[int]
    lines: int = 0
    empty_lines: int = 0  # non-blank lines that tokenise to nothing (Google drops them too)

    @property
    def count(self) -> int:
        return len(self.doc_sent) - 1

    @property
    def tokens(self) -> int:
        return int(self.sent_off[-1])

    def permuted(self, order: list[int]) -> Documents:
        """The same documents in ``order`` (Google shuffles its document list)."""
        sentences = [s for d in order for s in range(self.doc_sent[d], self.doc_sent[d + 1])]
        lengths = np.diff(np.asarray(self.sent_off, dtype=np.int64))[sentences]
        starts = np.asarray(self.sent_off, dtype=np.int64)[sentences]
        ids = np.concatenate([self.ids[a:a + n] for a, n in zip(starts, lengths, strict=True)]) \
            if sentences else self.ids[:0]
        sent_off = [0, *np.cumsum(lengths).tolist()]
        per_doc = [self.doc_sent[d + 1] - self.doc_sent[d] for d in order]
        doc_sent = [0, *np.cumsum(per_doc).tolist()]
        return Documents(ids, sent_off, doc_sent, self.lines, self.empty_lines)


_CACHE_LINES = 200_000  # distinct danmaku remembered per worker (bounded: flat memory)


def tokenize_documents(docs: Iterable[list[str]], tokenizer: BertTokenizer,
                       cache: dict[str, np.ndarray] | None = None) -> Documents:
    """Tokenise documents of stripped, non-blank lines; drop lines/documents left empty.

    Danmaku repeat a lot ("awsl", "哈哈哈"), so each distinct line is tokenised
    once, and ``cache`` (kept by a worker across shards, cleared when it holds
    ``_CACHE_LINES``) remembers them between calls.
    """
    docs = [doc for doc in docs if doc]
    cache = {} if cache is None else cache
    flat_lines = [line for doc in docs for line in doc]
    todo = list(dict.fromkeys(line for line in flat_lines if line not in cache))
    if len(cache) + len(todo) > _CACHE_LINES:
        cache.clear()
        todo = list(dict.fromkeys(flat_lines))
    for line, ids in zip(todo, tokenizer.ids_batch(todo), strict=True):
        cache[line] = np.asarray(ids, dtype=np.int32)
    encoded = [cache[line] for line in flat_lines]
    line_len = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
    kept_lines = line_len > 0
    pieces = [e for e, keep in zip(encoded, kept_lines.tolist(), strict=True) if keep]
    ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    sent_off = [0, *np.cumsum(line_len[kept_lines]).tolist()]
    per_doc = np.add.reduceat(kept_lines.astype(np.int64), np.cumsum([0] + [len(d) for d in docs[:-1]])) \
        if docs else np.zeros(0, np.int64)
    doc_sent = [0, *np.cumsum(per_doc[per_doc > 0]).tolist()]
    return Documents(ids, sent_off, doc_sent, len(flat_lines), int((~kept_lines).sum()))


def read_documents(lines: Iterable[bytes | str]) -> Iterator[list[str]]:
    """Google's reading: strip each line; a blank line ends a document."""
    doc: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.strip()
        if not line:
            if doc:
                yield doc
            doc = []
        else:
            doc.append(line)
    if doc:
        yield doc


def _open_lines(path: Path) -> Iterator[bytes]:
    """Lines split at ``\\n`` only, as Google's ``GFile.readline`` does."""
    with open(path, "rb") as handle:
        yield from handle


# ---------------------------------------------------------------------------
# Google's create_instances_from_document, on spans
# ---------------------------------------------------------------------------
Emit = Callable[[int, int, int, int, bool], None]


def document_instances(docs: Documents, d: int, opts: InstanceOptions, rng: random.Random,
                       emit: Emit) -> None:
    """Google's ``create_instances_from_document`` for document ``d``, in token spans.

    Calls ``emit(a_lo, a_hi, b_lo, b_hi, is_random_next)`` for each instance
    (tokens A = ``ids[a_lo:a_hi]``, B = ``ids[b_lo:b_hi]``), consuming ``rng``
    exactly as Google's code does, so a caller that masks with the same ``rng``
    inside ``emit`` reproduces Google's random stream.
    """
    off, doc_sent = docs.sent_off, docs.doc_sent
    n_docs = len(doc_sent) - 1
    first, last = doc_sent[d], doc_sent[d + 1]
    max_num_tokens = opts.max_seq_length - 3
    target = max_num_tokens
    if rng.random() < opts.short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    chunk_start = first
    while chunk_start < last:
        # Google adds sentences until the chunk reaches the target or the document ends.
        i = min(bisect_left(off, off[chunk_start] + target, chunk_start + 1, last + 1), last) - 1
        n_chunk = i + 1 - chunk_start
        a_end = rng.randint(1, n_chunk - 1) if n_chunk >= 2 else 1
        a_lo, a_hi = off[chunk_start], off[chunk_start + a_end]
        if n_chunk == 1 or rng.random() < 0.5:
            is_random = True
            target_b = target - (a_hi - a_lo)
            for _ in range(10):
                r = rng.randint(0, n_docs - 1)
                if r != d:
                    break
            r_first, r_last = doc_sent[r], doc_sent[r + 1]
            j = r_first + rng.randint(0, r_last - r_first - 1)
            b_lo = off[j]
            # sentences from j on, until B reaches its target or the document ends
            b_hi = off[min(bisect_left(off, b_lo + target_b, j + 1, r_last + 1), r_last)]
            i -= n_chunk - a_end  # the unused sentences start the next chunk
        else:
            is_random = False
            b_lo, b_hi = a_hi, off[i + 1]
        # Google's truncate_seq_pair: trim the longer side at a random end.
        la, lb = a_hi - a_lo, b_hi - b_lo
        while la + lb > max_num_tokens:
            if la > lb:
                if rng.random() < 0.5:
                    a_lo += 1
                else:
                    a_hi -= 1
                la -= 1
            else:
                if rng.random() < 0.5:
                    b_lo += 1
                else:
                    b_hi -= 1
                lb -= 1
        emit(a_lo, a_hi, b_lo, b_hi, is_random)
        chunk_start = i + 1


class FastRandom(random.Random):
    """``random.Random`` with a cheaper ``randint`` (not Python's exact stream).

    The sharded mode only needs Google's distribution, and ``randint`` is a
    third of the instance-building time in pure Python.
    """

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))


# ---------------------------------------------------------------------------
# Batches of instances as arrays
# ---------------------------------------------------------------------------
@dataclass
class Batch:
    """Instances in Google's feature layout (padded to max_seq_length / max_predictions)."""

    input_ids: np.ndarray            # [n, seq] int32
    input_mask: np.ndarray           # [n, seq] uint8
    segment_ids: np.ndarray          # [n, seq] uint8
    masked_lm_positions: np.ndarray  # [n, pred] int32
    masked_lm_ids: np.ndarray        # [n, pred] int32
    masked_lm_weights: np.ndarray    # [n, pred] float32
    next_sentence_labels: np.ndarray  # [n] uint8

    def __len__(self) -> int:
        return len(self.input_ids)


def spans_to_tokens(ids: np.ndarray, spans: np.ndarray, seq: int, cls_id: int, sep_id: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` rows (unmasked ids, segment ids, lengths, len(A)) from spans."""
    a_lo, a_hi, b_lo, b_hi = (spans[:, k:k + 1] for k in range(4))
    la, lb = a_hi - a_lo, b_hi - b_lo
    col = np.arange(seq)[None, :]
    in_a = (col >= 1) & (col <= la)
    in_b = (col >= la + 2) & (col < la + 2 + lb)
    src = np.where(in_a, a_lo + col - 1, np.where(in_b, b_lo + col - la - 2, 0))
    tokens = np.where(in_a | in_b, ids[src] if len(ids) else 0, 0).astype(np.int32)
    n = la + lb + 3
    tokens[:, 0] = cls_id
    rows = np.arange(len(spans))
    tokens[rows, la[:, 0] + 1] = sep_id
    tokens[rows, n[:, 0] - 1] = sep_id
    segments = ((col >= la + 2) & (col < n)).astype(np.uint8)
    return tokens, segments, n[:, 0], la[:, 0]


def mask_batch(tokens: np.ndarray, segments: np.ndarray, lengths: np.ndarray, len_a: np.ndarray,
               is_random: np.ndarray, opts: InstanceOptions, vocab_size: int, mask_id: int,
               gen: np.random.Generator) -> Batch:
    """Google's ``create_masked_lm_predictions``, vectorised over a batch.

    For each row: ``num_to_predict = min(max_pred, max(1, round(len * prob)))``
    positions drawn uniformly without replacement among the non-[CLS]/[SEP]
    tokens (random keys + argsort = a random permutation, as Google's shuffle),
    sorted; each becomes [MASK] with p=0.8, else itself (p=0.5) or a uniformly
    random vocabulary id.
    """
    n, seq = tokens.shape
    pred = opts.max_predictions_per_seq
    col = np.arange(seq)[None, :]
    candidate = (col >= 1) & (col < lengths[:, None] - 1) & (col != len_a[:, None] + 1)
    keys = gen.random((n, seq))
    keys[~candidate] = 2.0
    width = min(pred, seq)
    chosen = np.argpartition(keys, width - 1, axis=1)[:, :width] if width < seq else \
        np.argsort(keys, axis=1)[:, :width]
    # keep the num_to_predict smallest keys of each row, then sort them by position
    chosen_keys = np.take_along_axis(keys, chosen, axis=1)
    order = np.argsort(chosen_keys, axis=1)
    chosen = np.take_along_axis(chosen, order, axis=1)
    num = np.minimum(pred, np.maximum(1, np.round(lengths * opts.masked_lm_prob).astype(np.int64)))
    num = np.minimum(num, candidate.sum(axis=1))
    valid = np.arange(width)[None, :] < num[:, None]
    positions = np.where(valid, chosen, seq).astype(np.int64)
    positions.sort(axis=1)
    valid = positions < seq
    positions = np.where(valid, positions, 0)

    rows = np.repeat(np.arange(n), width).reshape(n, width)
    labels = np.where(valid, tokens[rows, positions], 0).astype(np.int32)
    r1 = gen.random((n, width))
    r2 = gen.random((n, width))
    random_ids = gen.integers(0, vocab_size, (n, width), dtype=np.int32)
    replacement = np.where(r1 < 0.8, mask_id, np.where(r2 < 0.5, labels, random_ids))
    out = tokens.copy()
    out[rows[valid], positions[valid]] = replacement[valid]

    padded = np.zeros((n, pred), np.int32)
    padded_ids = np.zeros((n, pred), np.int32)
    weights = np.zeros((n, pred), np.float32)
    padded[:, :width] = positions
    padded_ids[:, :width] = labels
    weights[:, :width] = valid
    input_mask = (col < lengths[:, None]).astype(np.uint8)
    return Batch(out, input_mask, segments, padded, padded_ids, weights, is_random.astype(np.uint8))


# ---------------------------------------------------------------------------
# TFRecord writing (tf.train.Example bytes built directly)
# ---------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINT = [_varint(i) for i in range(1 << 14)]


def _vlen(value: int) -> bytes:
    return _SMALL_VARINT[value] if value < 16384 else _varint(value)


def _packed_varints(matrix: np.ndarray) -> tuple[bytes, list[int]]:
    """Protobuf varint bytes of every value of a non-negative [n, k] matrix, row-major,
    and the byte offset where each row starts (n + 1 offsets; values < 2**28)."""
    v = np.ascontiguousarray(matrix, dtype=np.uint32)
    if v.size and int(v.max()) >= 1 << 28:
        raise ValueError("feature value out of range for the packed writer")
    width = 1 if not v.size else 1 + (int(v.max()) >= 1 << 7) + (int(v.max()) >= 1 << 14) \
        + (int(v.max()) >= 1 << 21)
    nbytes = np.ones(v.shape, np.uint8)
    for k in range(1, width):
        nbytes += v >= (1 << (7 * k))
    planes = np.empty(v.shape + (width,), np.uint8)
    for k in range(width):
        planes[..., k] = ((v >> (7 * k)) & 0x7F) | ((nbytes > k + 1) << 7)
    keep = np.arange(width, dtype=np.uint8) < nbytes[..., None]
    offsets = np.zeros(len(v) + 1, np.int64)
    np.cumsum(nbytes.sum(axis=1, dtype=np.int64), out=offsets[1:])
    return planes[keep].tobytes(), offsets.tolist()


def _entry_prefix(key: str, kind: int, payload_len: int) -> bytes:
    """Map-entry bytes of ``feature[key]`` up to its packed payload (kind 3: int64, 2: float)."""
    inner = b"\x0a" + _vlen(payload_len)  # (Int64List|FloatList).value, packed
    feature = bytes([kind << 3 | 2]) + _vlen(len(inner) + payload_len) + inner
    key_b = key.encode()
    entry = b"\x0a" + _vlen(len(key_b)) + key_b + b"\x12" + _vlen(len(feature) + payload_len) + feature
    return b"\x0a" + _vlen(len(entry) + payload_len) + entry


class _Prefixes(dict):
    """Entry prefixes of one int64 feature, by payload length (memoised)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __missing__(self, length: int) -> bytes:
        value = self[length] = _entry_prefix(self.key, 3, length)
        return value


_PREFIXES = {key: _Prefixes(key) for key in ("input_ids", "masked_lm_positions", "masked_lm_ids")}


def serialize_batch(batch: Batch) -> list[bytes]:
    """``tf.train.Example`` bytes for every instance of ``batch``."""
    n, seq = batch.input_ids.shape
    pred = batch.masked_lm_positions.shape[1]
    ids_raw, ids_off = _packed_varints(batch.input_ids)
    lm_raw, lm_off = _packed_varints(batch.masked_lm_ids)
    pos_raw, pos_off = _packed_varints(batch.masked_lm_positions)
    mask_raw = np.ascontiguousarray(batch.input_mask, dtype=np.uint8).tobytes()
    seg_raw = np.ascontiguousarray(batch.segment_ids, dtype=np.uint8).tobytes()
    w_raw = np.ascontiguousarray(batch.masked_lm_weights, dtype="<f4").tobytes()
    labels = batch.next_sentence_labels.astype(np.uint8).tolist()
    fixed_mask = _entry_prefix("input_mask", 3, seq)
    fixed_seg = _entry_prefix("segment_ids", 3, seq)
    fixed_w = _entry_prefix("masked_lm_weights", 2, 4 * pred)
    label_entries = [_entry_prefix("next_sentence_labels", 3, 1) + bytes([v]) for v in (0, 1)]
    p_ids, p_pos, p_lm = (_PREFIXES[k] for k in ("input_ids", "masked_lm_positions", "masked_lm_ids"))
    out = []
    for k in range(n):
        i0, i1, l0, l1 = ids_off[k], ids_off[k + 1], lm_off[k], lm_off[k + 1]
        q0, q1 = pos_off[k], pos_off[k + 1]
        body = b"".join((
            p_ids[i1 - i0], ids_raw[i0:i1],
            fixed_mask, mask_raw[k * seq:(k + 1) * seq],
            fixed_seg, seg_raw[k * seq:(k + 1) * seq],
            p_pos[q1 - q0], pos_raw[q0:q1],
            p_lm[l1 - l0], lm_raw[l0:l1],
            fixed_w, w_raw[k * 4 * pred:(k + 1) * 4 * pred],
            label_entries[labels[k]],
        ))
        out.append(b"\x0a" + _vlen(len(body)) + body)
    return out


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordWriter:
    """Appends records in TFRecord framing (length, masked CRC32C, data, masked CRC32C).

    Written to ``path + ".tmp"`` and renamed on ``close()``, so a finished shard
    is never half written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._handle = open(self.tmp, "wb")  # noqa: SIM115
        self.records = 0

    def write_many(self, records: Iterable[bytes]) -> None:
        parts = []
        for data in records:
            header = struct.pack("<Q", len(data))
            parts += (header, struct.pack("<I", _masked_crc(header)), data,
                      struct.pack("<I", _masked_crc(data)))
            self.records += 1
        self._handle.write(b"".join(parts))

    def close(self) -> None:
        self._handle.close()
        os.replace(self.tmp, self.path)


# ---------------------------------------------------------------------------
# One shard (worker side)
# ---------------------------------------------------------------------------
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
class _ShardJob:
    docs: list[list[str]]
    out: str
    seed: tuple[int, ...]
    vocab_path: str
    opts: InstanceOptions


_TOKENIZERS: dict[str, BertTokenizer] = {}
_WORKER_CACHE: dict[str, np.ndarray] = {}


def _tokenizer(vocab_path: str) -> BertTokenizer:
    if vocab_path not in _TOKENIZERS:
        _TOKENIZERS[vocab_path] = BertTokenizer(vocab_path)
    return _TOKENIZERS[vocab_path]


def _special_ids(tok: BertTokenizer) -> tuple[int, int, int]:
    try:
        return tok.vocab["[CLS]"], tok.vocab["[SEP]"], tok.vocab["[MASK]"]
    except KeyError as err:
        raise ValueError(f"vocabulary {tok.vocab_path} lacks {err.args[0]}") from None


def process_shard(job: _ShardJob) -> ShardStats:
    """Tokenise one shard of documents, build its instances, write its TFRecord file."""
    tok = _tokenizer(job.vocab_path)
    cls_id, sep_id, mask_id = _special_ids(tok)
    docs = tokenize_documents(job.docs, tok, _WORKER_CACHE)
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
        for start in range(0, len(table), _BATCH):
            part = table[start:start + _BATCH]
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
    Path(job.out + ".json").write_text(json.dumps(asdict(stats)))
    return stats


# ---------------------------------------------------------------------------
# Google-exact mode
# ---------------------------------------------------------------------------
def google_exact_batch(docs: Documents, opts: InstanceOptions, vocab_size: int,
                       cls_id: int, sep_id: int, mask_id: int) -> Batch:
    """Google's ``create_training_instances`` (after reading) with its exact random stream."""
    rng = random.Random(opts.random_seed)
    order = list(range(docs.count))
    rng.shuffle(order)
    docs = docs.permuted(order)
    ids = docs.ids.tolist()
    seq, pred = opts.max_seq_length, opts.max_predictions_per_seq
    rows: list[tuple[list[int], int, list[int], list[int], bool]] = []

    def emit(a_lo: int, a_hi: int, b_lo: int, b_hi: int, is_random: bool) -> None:
        tokens = [cls_id, *ids[a_lo:a_hi], sep_id, *ids[b_lo:b_hi], sep_id]
        la = a_hi - a_lo
        cand = [i for i in range(1, len(tokens) - 1) if i != la + 1]
        rng.shuffle(cand)
        output = list(tokens)
        num = min(pred, max(1, int(round(len(tokens) * opts.masked_lm_prob))))
        chosen: list[tuple[int, int]] = []
        for index in cand:
            if len(chosen) >= num:
                break
            if rng.random() < 0.8:
                output[index] = mask_id
            elif rng.random() >= 0.5:
                output[index] = rng.randint(0, vocab_size - 1)
            chosen.append((index, tokens[index]))
        chosen.sort()
        rows.append((output, la, [p for p, _ in chosen], [t for _, t in chosen], is_random))

    for _ in range(opts.dupe_factor):
        for d in range(docs.count):
            document_instances(docs, d, opts, rng, emit)
    rng.shuffle(rows)

    n = len(rows)
    batch = Batch(np.zeros((n, seq), np.int32), np.zeros((n, seq), np.uint8), np.zeros((n, seq), np.uint8),
                  np.zeros((n, pred), np.int32), np.zeros((n, pred), np.int32),
                  np.zeros((n, pred), np.float32), np.zeros(n, np.uint8))
    for k, (tokens, la, positions, labels, is_random) in enumerate(rows):
        batch.input_ids[k, :len(tokens)] = tokens
        batch.input_mask[k, :len(tokens)] = 1
        batch.segment_ids[k, la + 2:len(tokens)] = 1
        batch.masked_lm_positions[k, :len(positions)] = positions
        batch.masked_lm_ids[k, :len(labels)] = labels
        batch.masked_lm_weights[k, :len(labels)] = 1.0
        batch.next_sentence_labels[k] = is_random
    return batch


# ---------------------------------------------------------------------------
# The prepare driver
# ---------------------------------------------------------------------------
@dataclass
class PrepareSummary:
    out_dir: Path
    splits: dict[str, ShardStats] = field(default_factory=dict)
    shards_reused: int = 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_files(corpus: Path) -> dict[str, Path]:
    """``{"train": ..., "eval": ...}`` from a corpus directory (or a single text file)."""
    corpus = Path(corpus)
    if corpus.is_file():
        return {"train": corpus}
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    train = corpus / TRAIN_FILE
    if not train.is_file():
        raise FileNotFoundError(f"{corpus} has no {TRAIN_FILE} (the corpus export)")
    files = {"train": train}
    if (corpus / EVAL_FILE).is_file():
        files["eval"] = corpus / EVAL_FILE
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


def _shards(path: Path, shard_bytes: int) -> Iterator[list[list[str]]]:
    """Whole documents of ``path`` in groups of about ``shard_bytes`` of text."""
    shard: list[list[str]] = []
    size = 0
    doc: list[str] = []
    for raw in _open_lines(path):
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

    Resumable: shards already written (file + ``.json``) by an identical
    earlier run are kept. Raises ``ValueError`` for an empty corpus, a corpus
    that is not UTF-8, or an ``out_dir`` prepared with other options.
    """
    opts = opts or InstanceOptions()
    files = corpus_files(corpus)
    tok = _tokenizer(str(vocab_path))
    cls_id, sep_id, mask_id = _special_ids(tok)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": FORMAT, "options": asdict(opts), "google_exact": google_exact,
        "shard_bytes": None if google_exact else shard_bytes,
        "vocab_size": len(tok.vocab), "vocab_sha256": _sha256(Path(vocab_path)),
        "corpus": {split: {"file": path.name, "bytes": path.stat().st_size}
                   for split, path in files.items()},
    }
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            raise ValueError(f"{out_dir} holds instances made with other options or corpus; "
                             "use a new --out directory")
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
    manifest = settings | {"splits": splits, "corpus_source": corpus_source(Path(corpus), files)}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    shutil.copyfile(vocab_path, out_dir / "vocab.txt")  # training needs the exact vocabulary
    return summary


def _prepare_exact(path: Path, split: str, out_dir: Path, opts: InstanceOptions, tok: BertTokenizer,
                   special: tuple[int, int, int]) -> ShardStats:
    docs = tokenize_documents(read_documents(_open_lines(path)), tok)
    stats = ShardStats(file=f"{split}-00000.tfrecord", documents=docs.count, lines=docs.lines,
                       empty_lines=docs.empty_lines, tokens=docs.tokens)
    if docs.count == 0:
        return stats
    batch = google_exact_batch(docs, opts, len(tok.vocab), *special)
    writer = TFRecordWriter(out_dir / stats.file)
    try:
        for start in range(0, len(batch), _BATCH):
            part = Batch(*(getattr(batch, f)[start:start + _BATCH] for f in FEATURES))
            writer.write_many(serialize_batch(part))
    finally:
        writer.close()
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
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

        for index, docs in enumerate(_shards(path, shard_bytes)):
            out = out_dir / f"{split}-{index:05d}.tfrecord"
            meta = Path(str(out) + ".json")
            if out.is_file() and meta.is_file():
                stats = ShardStats(**json.loads(meta.read_text()))
                total.add(stats)
                summary.shards_reused += 1
                done += 1
                if progress:
                    progress(split, done, stats)
                continue
            while len(pending) >= 2 * workers:  # bounded read-ahead: flat memory
                collect()
            job = _ShardJob(docs, str(out), (opts.random_seed, split_index, index), vocab_path, opts)
            pending.add(pool.submit(process_shard, job))
        while pending:
            collect()
    return total
