"""Texts -> token ids -> per-layer vectors -> pooled sentence vectors.

This is bert-as-service's feature path on keras-hub: Google-exact word pieces
(``danmaku.text.tokenizer.BertTokenizer``), ``[CLS] tokens [SEP]`` truncated to
``max_seq_len`` (word pieces beyond ``max_seq_len - 2`` are dropped, as its
``convert_lst_to_features`` did), segment 0, input mask 1 on every real token.
Texts are sorted by token count before batching so a batch is padded only to
its own longest member (not to ``max_seq_len``): padding costs as much compute
as a real token, and BERT with an attention mask gives the same vectors either
way. A batch also closes early when the next, longer text would bring its
padding above ``MAX_PADDING`` times its real tokens (one long phrase among short
ones gets a batch of its own instead of stretching 30 others). Results come
back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danmaku.embed.pooling import Pooling, pool, resolve_layers
from danmaku.text.tokenizer import UNK, BertTokenizer

CLS, SEP = "[CLS]", "[SEP]"
DEFAULT_MAX_SEQ_LEN = 32
DEFAULT_BATCH_SIZE = 64
MAX_PADDING = 0.25  # padding slots allowed per real token in a batch


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_padding: float = MAX_PADDING
) -> list[np.ndarray]:
    """Indices of ``lengths`` in batches: by length, at most ``batch_size`` each, and padding
    at most ``max_padding`` times the batch's real tokens (a batch of one is always allowed)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for index in order:
        n = int(lengths[index])
        if current and (
            len(current) == batch_size or (len(current) + 1) * n > (1 + max_padding) * (real + n)
        ):
            batches.append(current)
            current, real = [], 0
        current.append(int(index))
        real += n
    if current:
        batches.append(current)
    return [np.asarray(b) for b in batches]


@dataclass(frozen=True)
class EncoderSettings:
    """How sentences become vectors (what ``GET /status`` reports)."""

    pooling: Pooling = Pooling.REDUCE_MEAN
    layers: tuple[int, ...] = (-1,)
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    batch_size: int = DEFAULT_BATCH_SIZE


class Encoder:
    """Sentence vectors from a BERT backbone, pooled the bert-as-service way.

    Args:
        backbone: a keras-hub ``BertBackbone`` with weights (``LoadedBert.backbone``).
        vocab_path: the model's ``vocab.txt``.
        settings: pooling strategy, layers (bert-as-service indices, -1 = last),
            ``max_seq_len`` (counting ``[CLS]`` and ``[SEP]``) and batch size.
        do_lower_case: Google's tokenizer flag (True for Chinese BERT).

    Example:
        >>> enc = Encoder(loaded.backbone, loaded.vocab_path)
        >>> enc.encode(["阿夸", "晚安"]).shape
        (2, 768)
    """

    def __init__(
        self,
        backbone,
        vocab_path: str | Path,
        settings: EncoderSettings | None = None,
        *,
        do_lower_case: bool = True,
    ) -> None:
        self.settings = settings or EncoderSettings()
        s = self.settings
        model_max = int(getattr(backbone, "max_sequence_length", 512))
        if not 2 <= s.max_seq_len <= model_max:
            raise ValueError(
                f"max_seq_len must be between 2 and {model_max} (the model's), got {s.max_seq_len}"
            )
        if s.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {s.batch_size}")
        self.layers = resolve_layers(s.layers, int(backbone.num_layers))
        self.tokenizer = BertTokenizer(vocab_path, do_lower_case=do_lower_case)
        for special in (CLS, SEP):
            if special not in self.tokenizer.vocab:
                raise ValueError(f"{vocab_path} has no {special} token: not a BERT vocabulary")
        self.cls_id = self.tokenizer.vocab[CLS]
        self.sep_id = self.tokenizer.vocab[SEP]
        from danmaku.embed.features import LayerFeatures  # TensorFlow: only once a model is there

        self.features = LayerFeatures(backbone, self.layers)
        self.dim = s.pooling.width(self.features.hidden)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one text's output (token-level for NONE)."""
        s = self.settings
        return (s.max_seq_len, self.dim) if s.pooling.token_level else (self.dim,)

    # -- inputs ---------------------------------------------------------------
    def frame(self, pieces: Sequence[Sequence[int]]) -> tuple[list[list[int]], int]:
        """``[CLS] pieces [SEP]`` per text, cut to ``max_seq_len``; also how many were cut."""
        keep = self.settings.max_seq_len - 2
        framed = [[self.cls_id, *p[:keep], self.sep_id] for p in pieces]
        return framed, sum(len(p) > keep for p in pieces)

    def ids_for_texts(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Framed word-piece ids per text and the number of texts truncated."""
        return self.frame(self.tokenizer.ids_batch(texts))

    def ids_for_tokens(self, token_lists: Sequence[Sequence[str]]) -> tuple[list[list[int]], int]:
        """Same for pre-tokenized input (bert-as-service's ``is_tokenized``): unknown -> [UNK]."""
        vocab, unk = self.tokenizer.vocab, self.tokenizer.vocab[UNK]
        return self.frame([[vocab.get(t, unk) for t in tokens] for tokens in token_lists])

    # -- model ----------------------------------------------------------------
    def encode_ids(
        self, ids: Sequence[Sequence[int]], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Vectors for framed id lists, batched by length, returned in input order."""
        s = self.settings
        out = np.zeros((len(ids), *self.output_shape), dtype=np.float32)
        for rows in plan_batches([len(x) for x in ids], s.batch_size):
            width = max(len(ids[r]) for r in rows)
            token_ids = np.zeros((len(rows), width), dtype=np.int32)
            mask = np.zeros((len(rows), width), dtype=np.int32)
            for i, r in enumerate(rows):
                token_ids[i, : len(ids[r])] = ids[r]
                mask[i, : len(ids[r])] = 1
            out[rows] = pool(self.features(token_ids, mask), mask, s.pooling, s.max_seq_len)
            if on_batch is not None:
                on_batch(len(rows))
        return out

    def encode(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """One vector per text (``[n, dim]``; ``[n, max_seq_len, dim]`` for NONE)."""
        return self.encode_ids(self.ids_for_texts(texts)[0], on_batch)

    def encode_tokens(
        self, token_lists: Sequence[Sequence[str]], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        return self.encode_ids(self.ids_for_tokens(token_lists)[0], on_batch)
