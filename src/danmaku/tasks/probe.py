"""The linear probe: logistic regression on frozen sentence vectors.

Fine-tuning changes every weight; a probe changes none, so it measures what
the pretrained vectors themselves already separate (the view of Gururangan et
al. and of SentEval). The vectors are ``danmaku embed``'s (``Encoder``:
bert-as-service's REDUCE_MEAN of the last layer by default), standardised, and
fed to scikit-learn's multinomial ``LogisticRegression`` (lbfgs, deterministic).
The training rows are a seeded sample of at most ``max_train`` rows, which
bounds the time and memory of encoding and fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_MAX_TRAIN = 20_000


def sample_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """At most ``limit`` of ``range(n)``, a seeded sample in increasing order (all when it fits)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def fit_predict(train_x: np.ndarray, train_y: Sequence[int], test_x: np.ndarray, *, seed: int,
                c: float = 1.0, max_iter: int = 1000) -> np.ndarray:
    """Predicted class ids for ``test_x`` from a probe fitted on ``(train_x, train_y)``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():  # max_iter bounds the time; an unconverged fit is still a probe
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_x, np.asarray(train_y))
    return probe.predict(test_x)


def probe_predictions(encoder, train_texts: Sequence[str], train_y: Sequence[int], test_texts: Sequence[str],
                      *, seed: int, max_train: int | None = DEFAULT_MAX_TRAIN, max_iter: int = 1000,
                      on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """(test predictions, training rows used): encode, fit, predict."""
    rows = sample_rows(len(train_texts), max_train, seed)
    train_x = encoder.encode([train_texts[i] for i in rows], on_batch)
    test_x = encoder.encode(list(test_texts), on_batch)
    labels = np.asarray(train_y)[rows]
    return fit_predict(train_x, labels, test_x, seed=seed, max_iter=max_iter), len(rows)
