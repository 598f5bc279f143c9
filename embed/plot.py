"""The study's picture: phrases -> PCA -> t-SNE -> labelled scatter, one panel per model.

Parameters are the study's: PCA to 50 dimensions (fewer when there are fewer
phrases or dimensions), t-SNE to 2-D with perplexity 45 (capped below the
number of phrases, as t-SNE requires), learning rate 100, 2000 iterations,
``random_state=0``, and ``init="random"`` -- the scikit-learn default of 2019
(today's default is "pca"). Labels use a CJK font (``fonts.py``) and are pushed
apart with adjustText so that none covers another; the number of overlapping
label pairs that remain is measured on the rendered figure and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PCA_DIMS = 50
PERPLEXITY = 45.0
LEARNING_RATE = 100.0
ITERATIONS = 2000
SEED = 0


@dataclass
class Panel:
    """One model's phrases and their 2-D positions."""

    name: str
    phrases: list[str]
    xy: np.ndarray


def tsne_perplexity(n: int) -> float:
    """The study's 45, capped below ``n`` (scikit-learn requires perplexity < n_samples)."""
    return float(min(PERPLEXITY, max(n - 1, 1)))


def layout_2d(vectors: np.ndarray, *, seed: int = SEED, iterations: int = ITERATIONS) -> np.ndarray:
    """``[n, d]`` vectors -> ``[n, 2]`` by PCA then t-SNE (the study's settings)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    vectors = np.asarray(vectors, dtype=np.float64)
    n, d = vectors.shape
    if n < 3:
        raise ValueError(f"need at least 3 phrases for t-SNE, got {n}")
    reduced = PCA(n_components=min(PCA_DIMS, n, d), random_state=seed).fit_transform(vectors)
    tsne = TSNE(
        n_components=2,
        perplexity=tsne_perplexity(n),
        learning_rate=LEARNING_RATE,
        max_iter=iterations,
        init="random",
        random_state=seed,
    )
    return tsne.fit_transform(reduced)


def _overlaps(texts, renderer) -> int:
    boxes = [t.get_window_extent(renderer) for t in texts]
    count = 0
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                count += 1
    return count


def draw(panels: Sequence[Panel], out: str | Path, *, title: str | None = None, dpi: int = 150) -> int:
    """Draw the panels side by side into ``out`` (PNG, SVG, PDF by suffix).

    Returns the number of label pairs that still overlap after repelling them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from adjustText import adjust_text

    from embed.fonts import register_cjk_font

    family = register_cjk_font()
    fig, axes = plt.subplots(1, len(panels), figsize=(9 * len(panels), 9), squeeze=False)
    labels = []
    for ax, panel in zip(axes[0], panels, strict=True):
        x, y = panel.xy[:, 0], panel.xy[:, 1]
        ax.scatter(x, y, s=12, color="#4c72b0", alpha=0.8, zorder=2)
        labels.append([
            ax.text(xi, yi, label, fontsize=9, family=family, zorder=3)
            for xi, yi, label in zip(x, y, panel.phrases, strict=True)
        ])
        ax.set_title(panel.name, fontsize=14, family=family)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, family=family)
    fig.tight_layout()  # fix the axes' final size before measuring labels against them
    for ax, panel, texts in zip(axes[0], panels, labels, strict=True):
        adjust_text(
            texts, x=panel.xy[:, 0], y=panel.xy[:, 1], ax=ax, expand=(1.15, 1.35),
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5},
        )
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    overlaps = sum(_overlaps(texts, renderer) for texts in labels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return overlaps
