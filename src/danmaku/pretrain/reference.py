"""A count-based masked-token reference: what the training file's bigrams predict.

A model that trains for minutes should beat what counting gets in seconds;
this module computes the counting side, on exactly the eval instances and
masked positions that ``evaluate.py`` scores the model on (the first
``max_steps`` batches of ``batch_size`` records of each split, in file order),
so the two rows of a table compare like with like.

The predictor. For a masked position whose visible neighbours -- in the input
the model sees -- are ``l`` (left) and ``r`` (right), every vocabulary token
``t`` gets

    P(t | l, r)  ~  P(t | l) * P(r | t)

normalised over the vocabulary: the posterior of the middle token of a
bigram Markov chain over the training file's token stream. Both factors are
Witten-Bell interpolated with an add-one unigram ``P1`` (no parameter to tune)::

    P(t | l) = (c(l, t) + T(l) * P1(t)) / (c(l) + T(l))
    P1(t)    = (c(t) + 1) / (N + V)

with ``c(l, t)`` the bigram count, ``c(l)`` the bigrams starting with ``l``,
``T(l)`` the distinct tokens seen after ``l``, ``N`` the tokens and ``V`` the
vocabulary size; a token never seen on the left of a bigram falls back to
``P1``. A neighbour that is a special token (``[CLS]``, ``[SEP]``, ``[PAD]``,
``[MASK]``: a segment boundary or another masked position) is no evidence:
its factor drops (the left one becomes ``P1(t)``). A neighbour replaced by a
random token is used as it is -- the model sees it too. The token at the
position itself is not used, as a plain bigram model would not; the model
sees the true token there at ~10% of the masked positions (Google's 80/10/10
rule), so it has that one advantage over this row.

Counting uses the instances' tokenizer and vocabulary
(``instances.tokenize_documents``) and joins each document's lines into one
stream, as Google's instances do (a danmaku's last token and the next one's
first are neighbours there); documents are not joined. The training file is
read in chunks of whole documents: memory holds the counts only (a sparse
V x V matrix of the bigrams seen). On the demo's 56 MB corpus it is built in
well under a minute (``bench/quality.py`` measures it).

Metrics are Google's definitions (``losses.py``): ``masked_lm_accuracy`` is the
weighted share of positions whose most probable token is the label,
``masked_lm_loss`` the weighted mean of ``-log P(label | l, r)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from danmaku.artifacts import CORPUS_TRAIN_FILE
from danmaku.pretrain.instances.documents import (
    open_lines,
    read_documents,
    tokenize_in_process,
    tokenizer_for,
)
from danmaku.processes import ordered_map, workers_for
from danmaku.text.tokenizer import BertTokenizer

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
_CHUNK_LINES = 50_000  # lines tokenised and counted per pass (whole documents)
_SCORE_ROWS = 256  # masked positions scored per numpy pass (rows x vocab floats)


@dataclass
class BigramCounts:
    """Token and bigram counts of a training file (one tokenizer, one vocabulary)."""

    vocab_size: int
    unigrams: np.ndarray  # c(t), int64 [V]
    bigrams: sp.csr_matrix  # c(l, r), int64 [V, V]
    special: np.ndarray  # bool [V]: tokens that are no evidence as neighbours
    lines: int = 0
    documents: int = 0

    @property
    def tokens(self) -> int:
        return int(self.unigrams.sum())


def _document_chunks(path: Path, chunk_lines: int) -> Iterator[list[list[str]]]:
    chunk: list[list[str]] = []
    lines = 0
    for doc in read_documents(open_lines(path)):
        chunk.append(doc)
        lines += len(doc)
        if lines >= chunk_lines:
            yield chunk
            chunk, lines = [], 0
    if chunk:
        yield chunk


_Part = tuple[np.ndarray, np.ndarray, np.ndarray, int, int]


def _count_chunk(vocab_path: str, chunk: list[list[str]]) -> _Part:
    """One chunk of documents -> (unigram counts, bigram codes ``l * V + r``, their counts, lines, docs)."""
    vocab = len(tokenizer_for(vocab_path).vocab)
    docs = tokenize_in_process(chunk, vocab_path)
    ids = docs.ids.astype(np.int64)
    unigrams = np.bincount(ids, minlength=vocab)
    codes = counts = np.zeros(0, np.int64)
    if len(ids) > 1:
        starts = np.asarray(docs.sent_off, np.int64)[np.asarray(docs.doc_sent, np.int64)]
        crosses = np.zeros(len(ids) - 1, bool)  # pair (i, i+1) where i+1 starts a document
        inner = starts[(starts > 0) & (starts < len(ids))]
        crosses[inner - 1] = True
        codes, counts = np.unique((ids[:-1] * vocab + ids[1:])[~crosses], return_counts=True)
    return unigrams, codes, counts, docs.lines, docs.count


def count_bigrams(train_file: str | Path, vocab_path: str | Path, *, workers: int | None = None,
                  chunk_lines: int = _CHUNK_LINES,
                  progress: Callable[[int], None] | None = None) -> BigramCounts:
    """Count tokens and within-document bigrams of ``train_file``, streaming it.

    Tokenising is most of the time (HF ``tokenizers`` plus Google's text
    cleaning, ~10 s per 10 MB on one core), so chunks go to ``workers``
    processes (default: one per CPU, or this process for files under 4 MB) with a bounded
    read-ahead; the main process only adds the sparse counts.
    ``progress(lines)`` is called after each chunk with the lines counted so far.
    """
    vocab_path = str(vocab_path)
    tok = BertTokenizer(vocab_path)
    vocab = len(tok.vocab)
    special = np.zeros(vocab, bool)
    special[[tok.vocab[t] for t in SPECIAL_TOKENS if t in tok.vocab]] = True
    unigrams = np.zeros(vocab, np.int64)
    bigrams = sp.csr_matrix((vocab, vocab), dtype=np.int64)
    lines = documents = 0

    def add(part: _Part) -> None:
        nonlocal unigrams, bigrams, lines, documents
        uni, codes, counts, n_lines, n_docs = part
        unigrams += uni
        bigrams = bigrams + sp.csr_matrix((counts, (codes // vocab, codes % vocab)), shape=(vocab, vocab),
                                          dtype=np.int64)
        lines += n_lines
        documents += n_docs
        if progress:
            progress(lines)

    chunks = _document_chunks(Path(train_file), chunk_lines)
    if workers is None:
        workers = workers_for(Path(train_file).stat().st_size)
    for part in ordered_map(functools.partial(_count_chunk, vocab_path), chunks, workers=workers):
        add(part)
    return BigramCounts(vocab, unigrams, bigrams.tocsr(), special, lines, documents)


class BigramReference:
    """``P(t | l, r) ~ P(t | l) P(r | t)`` over the vocabulary, from ``BigramCounts``.

    Tokens the training file never holds (most of Google's 21,128; the special
    ones) all get the same score at a position -- no count involves them -- so
    scores are computed over the tokens seen (a third of the vocabulary on the
    demo corpus) plus that one shared score; the result is the same as over the
    whole vocabulary (``log_probs`` expands it), at a third of the work.
    """

    def __init__(self, counts: BigramCounts) -> None:
        self.counts = counts
        v = counts.vocab_size
        self.log_p1 = np.log((counts.unigrams + 1.0) / (counts.unigrams.sum() + v))
        self.p1 = np.exp(self.log_p1)
        after = counts.bigrams.tocsr()  # row l: c(l, .)
        self.row_total = np.asarray(after.sum(axis=1)).ravel().astype(np.float64)  # c(l)
        self.row_types = np.diff(after.indptr).astype(np.float64)  # T(l)
        self.denominator = self.row_total + self.row_types
        self.seen_left = self.denominator > 0
        self.seen = np.flatnonzero(counts.unigrams > 0)
        self.unseen = np.flatnonzero(counts.unigrams == 0)
        self.column = np.full(v, -1, np.int64)  # token -> its column among the seen
        self.column[self.seen] = np.arange(len(self.seen))
        self.after = after[:, self.seen].tocsr()  # row l: c(l, t) for the seen t
        self.before = counts.bigrams.T.tocsr()[:, self.seen].tocsr()  # row r: c(t, r) for the seen t
        self.log_p1_unseen = float(np.log(1.0 / (counts.unigrams.sum() + v)))

    def _evidence(self, ids: np.ndarray) -> np.ndarray:
        return (ids >= 0) & ~self.counts.special[np.clip(ids, 0, None)]

    def _scores(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised log scores over the seen tokens [n, seen], and the unseen tokens' shared one [n]."""
        seen, p1 = self.seen, self.p1
        scores = np.tile(self.log_p1[seen], (len(left), 1))
        shared = np.full(len(left), self.log_p1_unseen)
        use = np.flatnonzero(self._evidence(left) & self.seen_left[np.clip(left, 0, None)])
        if len(use):  # P(t | l) = (c(l, t) + T(l) P1(t)) / (c(l) + T(l))
            ls = left[use]
            counts = self.after[ls].toarray()
            scores[use] = np.log((counts + self.row_types[ls, None] * p1[seen]) / self.denominator[ls, None])
            shared[use] = np.log(self.row_types[ls] * np.exp(self.log_p1_unseen) / self.denominator[ls])
        use = np.flatnonzero(self._evidence(right))
        if len(use):  # P(r | t), and P1(r) for a t never on the left of a bigram
            rs = right[use]
            counts = self.before[rs].toarray()
            left_seen = self.seen_left[seen]
            smoothed = (counts + self.row_types[seen] * p1[rs, None]) / np.where(
                left_seen, self.denominator[seen], 1.0)
            scores[use] += np.log(np.where(left_seen, smoothed, p1[rs, None]))
            shared[use] += np.log(p1[rs])
        return scores, shared

    def _log_normaliser(self, scores: np.ndarray, shared: np.ndarray) -> np.ndarray:
        top = np.maximum(scores.max(axis=1), shared)
        total = np.exp(scores - top[:, None]).sum(axis=1) + len(self.unseen) * np.exp(shared - top)
        return top + np.log(total)

    def log_probs(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Normalised ``log P(t | l, r)`` for every token ``t``: one row per (left, right) pair.

        A neighbour of -1 (none) or a special token gives no evidence.
        """
        left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
        scores, shared = self._scores(left, right)
        full = np.repeat(shared[:, None], self.counts.vocab_size, axis=1)
        full[:, self.seen] = scores
        return full - self._log_normaliser(scores, shared)[:, None]

    def _predict(self, left: np.ndarray, right: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``log P(label | l, r)`` and the most probable token (lowest id among ties, like argmax)."""
        scores, shared = self._scores(left, right)
        log_z = self._log_normaliser(scores, shared)
        rows = np.arange(len(labels))
        column = self.column[labels]
        label_score = np.where(column >= 0, scores[rows, np.clip(column, 0, None)], shared)
        best = scores.argmax(axis=1)
        top = self.seen[best]
        if len(self.unseen):
            first_unseen = self.unseen[0]
            wins = (shared > scores[rows, best]) | ((shared == scores[rows, best]) & (first_unseen < top))
            top = np.where(wins, first_unseen, top)
        return label_score - log_z, top

    def score(self, token_ids: np.ndarray, positions: np.ndarray, labels: np.ndarray,
              weights: np.ndarray) -> dict[str, float]:
        """Metric sums (``losses.SUM_KEYS``' masked-LM ones) of a batch in Google's layout.

        ``token_ids`` [B, S] the model's input, ``positions``/``labels``/``weights``
        [B, P] its ``masked_lm_*`` features.
        """
        token_ids, positions = np.asarray(token_ids, np.int64), np.asarray(positions, np.int64)
        seq = token_ids.shape[1]
        left = np.take_along_axis(token_ids, np.clip(positions - 1, 0, seq - 1), axis=1)
        left = np.where(positions > 0, left, -1)
        right = np.take_along_axis(token_ids, np.clip(positions + 1, 0, seq - 1), axis=1)
        right = np.where(positions + 1 < seq, right, -1)
        weights = np.asarray(weights, np.float64).ravel()
        keep = np.flatnonzero(weights > 0)
        left, right = left.ravel()[keep], right.ravel()[keep]
        labels, weights = np.asarray(labels, np.int64).ravel()[keep], weights[keep]
        loss_sum = correct = 0.0
        for lo in range(0, len(keep), _SCORE_ROWS):
            part = slice(lo, lo + _SCORE_ROWS)
            logp, top = self._predict(left[part], right[part], labels[part])
            loss_sum += float((weights[part] * -logp).sum())
            correct += float((weights[part] * (top == labels[part])).sum())
        return {"mlm_loss_sum": loss_sum, "mlm_correct": correct, "mlm_weight": float(weights.sum())}


def score_split(reference: BigramReference, files: list[str], *, seq: int, pred: int, batch_size: int = 8,
                max_steps: int | None = 100) -> dict[str, float]:
    """The reference's masked-LM metrics on the records ``evaluate.evaluate_split`` reads."""
    from danmaku.pretrain.data import eval_dataset

    loss_sum = correct = weight = 0.0
    examples = 0
    for inputs, labels in eval_dataset(files, batch_size, seq, pred, max_steps):
        sums = reference.score(inputs["token_ids"].numpy(), inputs["mask_positions"].numpy(),
                               labels["masked_lm_ids"].numpy(), labels["masked_lm_weights"].numpy())
        loss_sum += sums["mlm_loss_sum"]
        correct += sums["mlm_correct"]
        weight += sums["mlm_weight"]
        examples += int(labels["masked_lm_ids"].shape[0])
    w = max(weight, 1e-12)
    return {"masked_lm_accuracy": correct / w, "masked_lm_loss": loss_sum / w, "examples": examples,
            "positions": weight}


def training_file(corpus: str | Path, instances: Any) -> Path:
    """The training text of ``corpus`` (dir or file), checked against the instances' manifest."""
    corpus = Path(corpus)
    path = corpus / CORPUS_TRAIN_FILE if corpus.is_dir() else corpus
    if not path.is_file():
        raise FileNotFoundError(f"training file not found: {path} (give the corpus dir of `corpus export`)")
    made_from = instances.manifest.get("corpus", {}).get("train")
    if made_from and made_from.get("bytes") != path.stat().st_size:
        raise ValueError(f"{instances.directory} was made from a {made_from['file']} of "
                         f"{made_from['bytes']:,} bytes; {path} has {path.stat().st_size:,}: "
                         "give the corpus the instances were prepared from")
    return path


@dataclass
class ReferenceResult:
    """Metrics per split, and what was counted (``tokens``, ``lines``, ``documents``, ``bigram_types``)."""

    rows: dict[str, dict[str, float]]
    counted: dict[str, int]


def reference_metrics(corpus: str | Path, instances_dir: str | Path, *,
                      splits: tuple[str, ...] = ("train", "eval"), batch_size: int = 8,
                      max_steps: int | None = 100,
                      progress: Callable[[int], None] | None = None) -> ReferenceResult:
    """Count the corpus' training file, then score each split present in ``instances_dir``."""
    from danmaku.pretrain.data import open_instances

    instances = open_instances(instances_dir)
    counts = count_bigrams(training_file(corpus, instances), instances.vocab_path, progress=progress)
    reference = BigramReference(counts)
    results = {}
    for split in splits:
        if instances.has(split):
            results[split] = score_split(reference, instances.files(split), seq=instances.max_seq_length,
                                         pred=instances.max_predictions, batch_size=batch_size,
                                         max_steps=max_steps)
    if not results:
        raise ValueError(f"{instances_dir} has none of the splits {', '.join(splits)}")
    return ReferenceResult(results, {"tokens": counts.tokens, "lines": counts.lines,
                                     "documents": counts.documents, "bigram_types": int(counts.bigrams.nnz)})
