"""The study's picture: phrases -> PCA -> t-SNE -> labelled scatter, one panel per model.

Parameters are the study's: PCA to 50 dimensions (fewer when there are fewer
phrases or dimensions), t-SNE to 2-D with perplexity 45 (capped below the
number of phrases, as t-SNE requires), learning rate 100, 2000 iterations,
``random_state=0``, and ``init="random"`` -- the scikit-learn default of 2019
(today's default is "pca"). Labels use a CJK font (``fonts.py``) and are pushed
apart with adjustText, then any pair still overlapping is separated by a small
deterministic step; the overlaps left (normally none) are measured on the
rendered figure and reported.
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
    from threadpoolctl import threadpool_limits

    vectors = np.asarray(vectors, dtype=np.float64)
    n, d = vectors.shape
    if n < 3:
        raise ValueError(f"need at least 3 phrases for t-SNE, got {n}")
    tsne = TSNE(
        n_components=2,
        perplexity=tsne_perplexity(n),
        learning_rate=LEARNING_RATE,
        max_iter=iterations,
        init="random",
        random_state=seed,
    )
    # A few hundred points: OpenMP threads only add spin-waiting (10x slower on a busy 2-core box).
    with threadpool_limits(limits=1):
        reduced = PCA(n_components=min(PCA_DIMS, n, d), random_state=seed).fit_transform(vectors)
        return tsne.fit_transform(reduced)


def _overlapping_pairs(boxes) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, a in enumerate(boxes)
        for j in range(i + 1, len(boxes))
        if a.x0 < boxes[j].x1 and boxes[j].x0 < a.x1 and a.y0 < boxes[j].y1 and boxes[j].y0 < a.y1
    ]


def _separate(texts, ax, renderer, *, rounds: int = 100, gap: float = 2.0) -> int:
    """Push still-overlapping labels apart along their smaller overlap; returns pairs left.

    adjustText's forces leave a stray overlap now and then; this deterministic
    step finishes the job: each overlapping pair moves apart (half each) by the
    overlap plus ``gap`` pixels, along the axis where that is shorter.
    """
    to_data = ax.transData.inverted()
    for _ in range(rounds):
        boxes = [t.get_window_extent(renderer) for t in texts]
        pairs = _overlapping_pairs(boxes)
        if not pairs:
            return 0
        for i, j in pairs:
            a, b = texts[i].get_window_extent(renderer), texts[j].get_window_extent(renderer)
            dx = min(a.x1, b.x1) - max(a.x0, b.x0) + gap
            dy = min(a.y1, b.y1) - max(a.y0, b.y0) + gap
            if dx < 0 or dy < 0:  # an earlier move of this round already separated them
                continue
            if dx < dy:
                sign = 1.0 if (b.x0 + b.x1) >= (a.x0 + a.x1) else -1.0
                step = np.array([sign * dx / 2, 0.0])
            else:
                sign = 1.0 if (b.y0 + b.y1) >= (a.y0 + a.y1) else -1.0
                step = np.array([0.0, sign * dy / 2])
            for text, direction in ((texts[j], 1.0), (texts[i], -1.0)):
                where = ax.transData.transform(text.get_position()) + direction * step
                text.set_position(tuple(to_data.transform(where)))
    return len(_overlapping_pairs([t.get_window_extent(renderer) for t in texts]))


def _connect(ax, texts, x, y, renderer, *, min_pixels: float = 6.0) -> None:
    """A thin line from each point to its label when the label was moved away from it."""
    for text, xi, yi in zip(texts, x, y, strict=True):
        box = text.get_window_extent(renderer)
        px, py = ax.transData.transform((xi, yi))
        cx, cy = min(max(px, box.x0), box.x1), min(max(py, box.y0), box.y1)  # nearest point of the box
        if np.hypot(cx - px, cy - py) > min_pixels:
            ex, ey = ax.transData.inverted().transform((cx, cy))
            ax.plot([xi, ex], [yi, ey], color="0.6", lw=0.5, zorder=1)


def draw(panels: Sequence[Panel], out: str | Path, *, title: str | None = None, dpi: int = 150) -> int:
    """Draw the panels side by side into ``out`` (PNG, SVG, PDF by suffix).

    Returns the number of label pairs that still overlap after repelling them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from adjustText import adjust_text

    from danmaku.embed.fonts import register_cjk_font

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
    renderer = fig.canvas.get_renderer()
    overlaps = 0
    for ax, panel, texts in zip(axes[0], panels, labels, strict=True):
        x, y = panel.xy[:, 0], panel.xy[:, 1]
        ax.autoscale(False)  # labels and connectors must not rescale the axes under the labels
        adjust_text(texts, x=x, y=y, ax=ax, expand=(1.15, 1.35))
        overlaps += _separate(texts, ax, renderer)
        _connect(ax, texts, x, y, renderer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return overlaps
