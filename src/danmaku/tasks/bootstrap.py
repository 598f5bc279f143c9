"""Bootstrap 95% intervals of accuracy and macro-F1 over the test rows.

Resampling the test set with replacement (Efron's percentile bootstrap) says
how much a score would move on another test set of the same size from the same
source, which is what decides whether "tuned beats base" is more than noise.
Each resample's confusion matrix comes from one ``bincount`` over
``truth * K + prediction`` codes, so 1,000 resamples of 10,000 rows take
milliseconds; macro-F1 per resample averages over the classes present in its
truth or predictions, as ``sklearn.metrics.f1_score(average="macro")`` does
(``tests/tasks`` checks the two agree resample by resample).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
BLOCK = 100  # resamples drawn at once: memory BLOCK x rows


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of row indices ``[block, n]``, drawn with replacement; the same for the same seed."""
    rng = np.random.default_rng(seed)
    left = resamples
    while left > 0:
        size = min(BLOCK, left)
        yield rng.integers(0, n, size=(size, n))
        left -= size


def confusions(y_true: np.ndarray, y_pred: np.ndarray, k: int, indices: np.ndarray) -> np.ndarray:
    """Confusion matrices ``[resamples, k, k]`` (rows: truth) of the resampled rows."""
    codes = (y_true * k + y_pred)[indices]
    offset = (np.arange(len(indices)) * k * k)[:, None]
    flat = np.bincount((codes + offset).ravel(), minlength=len(indices) * k * k)
    return flat.reshape(len(indices), k, k)


def accuracy_of(cm: np.ndarray) -> np.ndarray:
    return np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))


def macro_f1_of(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of each confusion matrix over the classes in its truth or predictions."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    truth, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    present = (truth + predicted) > 0
    denominator = truth + predicted  # 2 TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return (f1 * present).sum(axis=-1) / present.sum(axis=-1)


def bootstrap(y_true, y_pred, k: int, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              level: float = 0.95) -> dict[str, Interval]:
    """``{"accuracy": Interval, "macro_f1": Interval}`` for one set of predictions."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError(f"need equal, non-empty truth and predictions, got {len(y_true)} and {len(y_pred)}")
    whole = confusions(y_true, y_pred, k, np.arange(len(y_true))[None, :])
    accuracies, f1s = [], []
    for block in resample_indices(len(y_true), resamples, seed):
        cm = confusions(y_true, y_pred, k, block)
        accuracies.append(accuracy_of(cm))
        f1s.append(macro_f1_of(cm))
    tail = 100 * (1 - level) / 2
    out = {}
    for name, point, samples in (("accuracy", accuracy_of(whole)[0], accuracies),
                                 ("macro_f1", macro_f1_of(whole)[0], f1s)):
        low, high = np.percentile(np.concatenate(samples), [tail, 100 - tail])
        out[name] = Interval(float(point), float(low), float(high))
    return out
