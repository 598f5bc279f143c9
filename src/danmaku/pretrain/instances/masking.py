"""Instances as arrays: spans -> padded token rows, and Google's masking, vectorised with numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from danmaku.pretrain.instances.options import InstanceOptions


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
