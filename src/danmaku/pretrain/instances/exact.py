"""``--google-exact``: Google's ``create_training_instances`` with its exact random stream."""

from __future__ import annotations

import random

import numpy as np

from danmaku.pretrain.instances.algorithm import document_instances
from danmaku.pretrain.instances.documents import Documents
from danmaku.pretrain.instances.masking import Batch
from danmaku.pretrain.instances.options import InstanceOptions


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
