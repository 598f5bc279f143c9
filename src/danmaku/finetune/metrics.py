"""Classification metrics, all from scikit-learn, in one JSON-ready dict.

``macro_f1`` is ``f1_score(average="macro")`` over the classes that occur in
the truth or the predictions (scikit-learn's default): a class absent from a
small test file does not count as a zero. The per-class report and the
confusion matrix list every class of the training file, in label-id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
                           ) -> dict[str, Any]:
    """Accuracy, macro-F1, scikit-learn's per-class report and the confusion matrix (rows: truth)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    ids = list(range(len(labels)))
    if not len(y_true):
        return {"examples": 0, "accuracy": float("nan"), "macro_f1": float("nan"), "per_class": {},
                "confusion_matrix": [[0] * len(ids) for _ in ids]}
    return {
        "examples": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": classification_report(y_true, y_pred, labels=ids, target_names=list(labels),
                                           output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def majority_class(train_label_ids: Sequence[int]) -> int:
    """The most frequent training class (the lowest id among ties)."""
    return int(np.argmax(np.bincount(np.asarray(train_label_ids))))


def majority_baseline(train_label_ids: Sequence[int], y_true: Sequence[int], labels: Sequence[str]
                      ) -> dict[str, Any]:
    """The metrics of always answering the most frequent training class: the floor to beat."""
    guess = majority_class(train_label_ids)
    metrics = classification_metrics(y_true, [guess] * len(y_true), labels)
    metrics["predicts"] = labels[guess]
    return metrics
