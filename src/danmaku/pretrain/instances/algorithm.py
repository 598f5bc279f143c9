"""Google's ``create_instances_from_document``, step for step, on token spans."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable

from danmaku.pretrain.instances.documents import Documents
from danmaku.pretrain.instances.options import InstanceOptions

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
