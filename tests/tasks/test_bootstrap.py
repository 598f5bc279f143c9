"""Bootstrap intervals against scikit-learn, resample by resample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from danmaku.tasks.bootstrap import bootstrap, resample_indices


def test_every_resample_agrees_with_scikit_learn():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, 300)
    guess = np.where(rng.random(300) < 0.6, truth, rng.integers(0, 5, 300))
    guess[guess == 4] = 3  # class 4 is never predicted; small resamples also lose classes of the truth
    result = bootstrap(truth, guess, 5, resamples=250, seed=11)

    accuracies, f1s = [], []
    for block in resample_indices(len(truth), 250, 11):
        for rows in block:
            accuracies.append(accuracy_score(truth[rows], guess[rows]))
            f1s.append(f1_score(truth[rows], guess[rows], average="macro", zero_division=0))
    assert result["accuracy"].value == pytest.approx(accuracy_score(truth, guess), abs=1e-12)
    assert result["macro_f1"].value == pytest.approx(f1_score(truth, guess, average="macro"), abs=1e-12)
    for name, samples in (("accuracy", accuracies), ("macro_f1", f1s)):
        low, high = np.percentile(samples, [2.5, 97.5])
        assert (result[name].low, result[name].high) == pytest.approx((low, high), abs=1e-12)
        assert result[name].low < result[name].value < result[name].high
    assert f"{result['accuracy']}".count("[") == 1


def test_classes_missing_from_a_resample_do_not_count():
    truth = np.array([0, 0, 0, 1])
    guess = np.array([0, 0, 0, 0])
    only_zeros = np.array([[0, 1, 2, 0]])
    from danmaku.tasks.bootstrap import confusions, macro_f1_of

    cm = confusions(truth, guess, 3, only_zeros)
    assert macro_f1_of(cm)[0] == pytest.approx(f1_score(truth[only_zeros[0]], guess[only_zeros[0]],
                                                        average="macro"))
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap([], [], 2)
