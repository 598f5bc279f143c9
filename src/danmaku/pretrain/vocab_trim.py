"""A from-scratch model's vocabulary: the tokens of Google's vocabulary that its training file uses.

Why: the masked-LM head scores every vocabulary token at every masked position
and its gradient reaches every row of the (tied) token table, so on the demo's
two-layer model it is about half of a training step. The shared sample's
training file uses 11,369 of the 21,128 tokens of Google's Chinese vocabulary
(the rest: other scripts, rare characters, ``[unused]`` slots); a model trained
from scratch can never learn a token it never sees, so scoring the others
only teaches it that they do not occur. Keeping the used ones (vocabulary
trimming, as Abdaoui et al. 2020 did for multilingual BERT) leaves the
tokenisation of the training file unchanged -- WordPiece's greedy longest
match over a subset that holds every piece it chose finds the same pieces --
so the instances hold the same tokens with other ids, and the model is still
a standard BERT whose ``vocab.txt`` says which tokens it knows (text outside
it becomes ``[UNK]``, as it would for any BERT). Measured in bench/RESULTS.md
("quality").

Not for a model that starts from Google's weights: its rows are indexed by the
full vocabulary (``danmaku pretrain train --init-checkpoint`` checks that the
vocabularies match).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danmaku.pretrain.instances.documents import tokenize_in_process, tokenizer_for
from danmaku.pretrain.instances.prepare import corpus_files, document_shards
from danmaku.pretrain.tokenizer_files import SPECIAL_TOKENS as HF_SPECIAL_TOKENS
from danmaku.processes import ordered_map, workers_for
from danmaku.text.tokenizer import load_vocab

# Kept whether the corpus uses them or not: the tokens BERT's inputs and heads are built from.
SPECIAL_TOKENS = tuple(HF_SPECIAL_TOKENS.values())

@dataclass(frozen=True)
class TrimSummary:
    """What ``trim_vocab`` kept: ``kept`` of ``source_size`` tokens, seen ``tokens`` times in ``lines``."""

    path: Path
    source_size: int
    kept: int
    tokens: int
    lines: int
    min_count: int


def _count_shard(vocab_path: str, docs: list[list[str]]) -> tuple[np.ndarray, int]:
    encoded = tokenize_in_process(docs, vocab_path)
    return np.bincount(encoded.ids, minlength=len(tokenizer_for(vocab_path).vocab)), encoded.lines


def count_tokens(text_file: Path, vocab_path: Path, *, workers: int | None = None,
                 shard_bytes: int = 4 << 20, progress: Callable[[int], None] | None = None
                 ) -> tuple[np.ndarray, int]:
    """How often each token of ``vocab_path`` occurs in ``text_file`` (Google's tokenizer), and its lines.

    The file is read as ``pretrain prepare`` reads it (whole documents, shards
    of ``shard_bytes``), each shard tokenised in a worker process (default: one
    per CPU, or this process for a small file: ``processes.workers_for``);
    memory stays flat. ``progress(lines_so_far)`` after each shard.
    """
    text_file = Path(text_file)
    if workers is None:
        workers = workers_for(text_file.stat().st_size)
    counts = np.zeros(len(load_vocab(vocab_path)), np.int64)
    lines = 0
    count = functools.partial(_count_shard, str(vocab_path))
    for shard_counts, shard_lines in ordered_map(count, document_shards(text_file, shard_bytes),
                                                 workers=workers):
        counts += shard_counts
        lines += shard_lines
        if progress:
            progress(lines)
    return counts, lines


def trim_vocab(corpus: Path, vocab_path: Path, out_path: Path, *, min_count: int = 1,
               workers: int | None = None, progress: Callable[[int], None] | None = None) -> TrimSummary:
    """Write to ``out_path`` the tokens of ``vocab_path`` that the corpus's training file uses.

    ``corpus``: a corpus directory (or its training file); only the training
    file counts, so the held-out eval file cannot shape the vocabulary.
    Tokens keep the source order (so ``[PAD]`` stays id 0); ``SPECIAL_TOKENS``
    are always kept. ``min_count`` > 1 drops rarer tokens too (their text then
    becomes ``[UNK]``); the default 1 keeps the training file's tokenisation.
    Raises ``ValueError`` if the source vocabulary lacks a special token or the
    training file is not UTF-8.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    words = load_vocab(vocab_path)
    missing = [tok for tok in SPECIAL_TOKENS if tok not in words]
    if missing:
        raise ValueError(f"{vocab_path} lacks {', '.join(missing)}: not a BERT vocabulary")
    train_file = corpus_files(Path(corpus))["train"]
    try:
        counts, lines = count_tokens(train_file, vocab_path, workers=workers, progress=progress)
    except UnicodeDecodeError as err:  # as ``prepare`` says it
        raise ValueError(f"{train_file} is not UTF-8 text: {err}") from None
    specials = set(SPECIAL_TOKENS)
    kept = [word for word, count in zip(words, counts.tolist(), strict=True)
            if count >= min_count or word in specials]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(word + "\n" for word in kept), encoding="utf-8")
    os.replace(tmp, out_path)
    return TrimSummary(out_path, len(words), len(kept), int(counts.sum()), lines, min_count)
