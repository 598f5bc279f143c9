"""Google's pretraining losses and metrics (``run_pretraining.py``), as sums that add up.

* masked LM loss: cross-entropy at each masked position, averaged with the
  ``masked_lm_weights`` (padding predictions weigh 0): ``sum(w*ce) / (sum(w) + 1e-5)``;
* next-sentence loss: mean cross-entropy of the 2-way head (label 0 = "is next");
* the training loss is their sum (``nsp_weight`` 1, Google's); other weights
  are ours (0 trains the masked LM alone, as RoBERTa does).

Eval metrics (``metric_fn``) are streaming means over all eval batches:
``masked_lm_accuracy`` (weighted), ``masked_lm_loss`` (weighted mean of the
per-position loss), ``next_sentence_accuracy``, ``next_sentence_loss``.
``MetricSums`` keeps the numerators and denominators so batches, micro-batches
and replicas combine exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import tensorflow as tf

SUM_KEYS = ("mlm_loss_sum", "mlm_correct", "mlm_weight", "nsp_loss_sum", "nsp_correct", "nsp_count")


def masked_lm_cross_entropy(logits: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of each masked slot over the vocabulary, as ``log-sum-exp - logit of the label``.

    The same number as ``tf.nn.sparse_softmax_cross_entropy_with_logits``, but
    TensorFlow's fused CPU kernel for it is slow on a wide vocabulary: for
    640 slots x 11,374 tokens (a batch of the demo) its forward and backward
    took 36-38 ms on 2 cores against 18 ms for ``reduce_logsumexp`` and a
    gather with their autodiff gradient, which is 7% of the demo's whole step.
    """
    ids = tf.convert_to_tensor(ids)
    return tf.reduce_logsumexp(logits, -1) - tf.gather(logits, ids, batch_dims=ids.shape.rank)


def pretraining_losses(outputs: dict[str, tf.Tensor], labels: dict[str, tf.Tensor], *,
                       nsp_weight: float = 1.0) -> dict[str, tf.Tensor]:
    """Google's ``total_loss`` (``loss``: mlm + nsp_weight x nsp) plus the sums behind its eval metrics."""
    mlm_logits = tf.cast(outputs["mlm_logits"], tf.float32)
    nsp_logits = tf.cast(outputs["nsp_logits"], tf.float32)
    ids = labels["masked_lm_ids"]
    weights = tf.cast(labels["masked_lm_weights"], tf.float32)
    nsp_labels = labels["next_sentence_labels"]
    mlm_ce = masked_lm_cross_entropy(mlm_logits, ids)
    nsp_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=nsp_labels, logits=nsp_logits)
    mlm_loss_sum = tf.reduce_sum(weights * mlm_ce)
    mlm_weight = tf.reduce_sum(weights)
    mlm_loss = mlm_loss_sum / (mlm_weight + 1e-5)
    nsp_loss = tf.reduce_mean(nsp_ce)
    mlm_hit = tf.cast(tf.equal(tf.argmax(mlm_logits, -1, output_type=tf.int32), ids), tf.float32)
    nsp_hit = tf.cast(tf.equal(tf.argmax(nsp_logits, -1, output_type=tf.int32), nsp_labels), tf.float32)
    return {
        # weight 0: the masked LM alone, so the pooler and NSP head get no gradient at all
        "loss": mlm_loss + nsp_weight * nsp_loss if nsp_weight else mlm_loss,
        "mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
        "mlm_loss_sum": mlm_loss_sum, "mlm_correct": tf.reduce_sum(weights * mlm_hit),
        "mlm_weight": mlm_weight, "nsp_loss_sum": tf.reduce_sum(nsp_ce),
        "nsp_correct": tf.reduce_sum(nsp_hit), "nsp_count": tf.cast(tf.size(nsp_ce), tf.float32),
    }


@dataclass
class MetricSums:
    """Running numerators/denominators of Google's four eval metrics."""

    mlm_loss_sum: float = 0.0
    mlm_correct: float = 0.0
    mlm_weight: float = 0.0
    nsp_loss_sum: float = 0.0
    nsp_correct: float = 0.0
    nsp_count: float = 0.0

    def add(self, values: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + float(values[f.name]))

    def metrics(self) -> dict[str, float]:
        """Google's names: masked_lm_accuracy, masked_lm_loss, next_sentence_accuracy, next_sentence_loss."""
        w, n = max(self.mlm_weight, 1e-12), max(self.nsp_count, 1e-12)
        return {
            "masked_lm_accuracy": self.mlm_correct / w,
            "masked_lm_loss": self.mlm_loss_sum / w,
            "next_sentence_accuracy": self.nsp_correct / n,
            "next_sentence_loss": self.nsp_loss_sum / n,
        }
