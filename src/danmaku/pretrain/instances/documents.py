"""A corpus file as tokenised documents: one flat token array and sentence/document offsets.

Google reads its input the same way: strip each line, a blank line ends a
document, lines that tokenise to nothing are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danmaku.text.tokenizer import BertTokenizer


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


_TOKENIZERS: dict[str, BertTokenizer] = {}
_LINE_CACHES: dict[str, dict[str, np.ndarray]] = {}  # per process and vocabulary


def tokenizer_for(vocab_path: str) -> BertTokenizer:
    """This process's tokenizer of ``vocab_path`` (built once: a worker reuses it for every shard)."""
    if vocab_path not in _TOKENIZERS:
        _TOKENIZERS[vocab_path] = BertTokenizer(vocab_path)
    return _TOKENIZERS[vocab_path]


def tokenize_in_process(docs: Iterable[list[str]], vocab_path: str) -> Documents:
    """``tokenize_documents`` with this process's tokenizer and line cache of ``vocab_path``.

    The instances, the count reference and the vocabulary count all read a
    corpus as shards in worker processes; each worker keeps one cache per
    vocabulary across its shards (danmaku repeat across documents too).
    """
    return tokenize_documents(docs, tokenizer_for(vocab_path), _LINE_CACHES.setdefault(vocab_path, {}))


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


def open_lines(path: Path) -> Iterator[bytes]:
    """Lines split at ``\\n`` only, as Google's ``GFile.readline`` does."""
    with open(path, "rb") as handle:
        yield from handle
