"""bert-as-service's pooling strategies, defined exactly as its server computed them.

bert-as-service (``server/bert_serving/server/graph.py``) turns the output of
one or several encoder layers into one vector per sentence. Its input mask is
1 for every token it fed the model -- ``[CLS]``, the word pieces *and*
``[SEP]`` -- and 0 for padding, so the default REDUCE_MEAN averages over
``[CLS]`` and ``[SEP]`` too (its ``-mask_cls_sep`` flag, off by default, is not
reproduced here). The definitions, with ``m`` that mask:

* REDUCE_MEAN: ``sum(x * m) / (sum(m) + 1e-10)`` over the tokens;
* REDUCE_MAX: ``max(x - (1 - m) * 1e30)`` over the tokens;
* REDUCE_MEAN_MAX: REDUCE_MEAN and REDUCE_MAX concatenated (twice the width);
* CLS_TOKEN / FIRST_TOKEN: the vector at position 0 (``[CLS]``);
* LAST_TOKEN / SEP_TOKEN: the vector at position ``sum(m) - 1`` (``[SEP]``);
* NONE: token-level vectors ``x * m``, padded with zeros to ``max_seq_len``.

Several layers are concatenated along the hidden axis *before* pooling, as
bert-as-service did. The functions take numpy arrays so that tests and the
service can use them without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

_MASK_OFFSET = np.float32(1e30)
_MEAN_JITTER = np.float32(1e-10)


class Pooling(StrEnum):
    """A bert-as-service pooling strategy (its names, including the aliases)."""

    NONE = "NONE"
    REDUCE_MAX = "REDUCE_MAX"
    REDUCE_MEAN = "REDUCE_MEAN"
    REDUCE_MEAN_MAX = "REDUCE_MEAN_MAX"
    FIRST_TOKEN = "FIRST_TOKEN"
    LAST_TOKEN = "LAST_TOKEN"
    CLS_TOKEN = "CLS_TOKEN"
    SEP_TOKEN = "SEP_TOKEN"

    @property
    def token_level(self) -> bool:
        return self is Pooling.NONE

    def width(self, hidden: int) -> int:
        """Length of one pooled vector for a (concatenated) layer width ``hidden``."""
        return 2 * hidden if self is Pooling.REDUCE_MEAN_MAX else hidden


def masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)
    return (x * m[..., None]).sum(axis=1) / (m.sum(axis=1, keepdims=True) + _MEAN_JITTER)


def masked_max(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)
    return (x - (1.0 - m)[..., None] * _MASK_OFFSET).max(axis=1)


def pool(
    x: np.ndarray, mask: np.ndarray, strategy: Pooling, max_seq_len: int | None = None
) -> np.ndarray:
    """Pool ``x`` ``[batch, seq, hidden]`` under input mask ``mask`` ``[batch, seq]``.

    ``max_seq_len`` only matters for NONE: token-level output is zero-padded to it
    (bert-as-service always ran at its fixed ``max_seq_len``), so that batches of
    different lengths stack into one array.
    """
    x = np.asarray(x, dtype=np.float32)
    mask = np.asarray(mask)
    if strategy is Pooling.REDUCE_MEAN:
        return masked_mean(x, mask)
    if strategy is Pooling.REDUCE_MAX:
        return masked_max(x, mask)
    if strategy is Pooling.REDUCE_MEAN_MAX:
        return np.concatenate([masked_mean(x, mask), masked_max(x, mask)], axis=1)
    if strategy in (Pooling.CLS_TOKEN, Pooling.FIRST_TOKEN):
        return x[:, 0, :].copy()
    if strategy in (Pooling.LAST_TOKEN, Pooling.SEP_TOKEN):
        last = mask.astype(np.int64).sum(axis=1) - 1
        return x[np.arange(x.shape[0]), last, :]
    if strategy is Pooling.NONE:
        out = x * mask.astype(np.float32)[..., None]
        width = max_seq_len or x.shape[1]
        if out.shape[1] < width:
            out = np.pad(out, ((0, 0), (0, width - out.shape[1]), (0, 0)))
        return out[:, :width, :]
    raise ValueError(f"unknown pooling strategy {strategy!r}")


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """bert-as-service's ``-pooling_layer`` indices -> 0-based transformer layer numbers.

    Indices address the outputs of the transformer layers (not the embeddings),
    Python style: -1 is the last layer, 0 the first. Raises ``ValueError`` when one
    is out of range or the list is empty.
    """
    if not layers:
        raise ValueError("at least one pooling layer is needed")
    resolved = []
    for layer in layers:
        if not -num_layers <= layer < num_layers:
            raise ValueError(
                f"pooling layer {layer} is out of range for a model with {num_layers} layers "
                f"(use -{num_layers}..{num_layers - 1})"
            )
        resolved.append(layer % num_layers)
    return resolved
