"""Nearest phrases by cosine similarity (what ``danmaku embed neighbors`` prints)."""

from __future__ import annotations

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def cosine_similarities(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``[q, c]`` cosine similarities."""
    return unit_rows(queries) @ unit_rows(candidates).T


def nearest(
    query: np.ndarray, candidates: np.ndarray, k: int, *, exclude: int | None = None
) -> list[tuple[int, float]]:
    """The ``k`` most similar candidates as ``(index, cosine)``, best first.

    Ties keep candidate order; ``exclude`` leaves one index out (the query itself
    when it is one of the candidates).
    """
    sims = cosine_similarities(np.asarray(query)[None, :], candidates)[0]
    order = [i for i in np.argsort(-sims, kind="stable") if i != exclude]
    return [(int(i), float(sims[i])) for i in order[:k]]
