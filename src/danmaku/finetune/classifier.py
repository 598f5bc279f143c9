"""The sequence classifier: keras-hub's ``BertTextClassifier`` on the one ``BertBackbone``.

No second BERT: the backbone is the one ``danmaku.pretrain.loading.load_bert``
builds (``pretrain/model.py``) from a Google dir, a run or an export, and the
head is keras-hub's own ``BertTextClassifier`` (pooled ``[CLS]`` output ->
dropout -> dense ``logits``), the shape of Google's ``run_classifier.py`` and of
HF's ``BertForSequenceClassification``. That is why the HF export is only a
renaming: the backbone through ``pretrain/checkpoints.py``'s Google <-> HF map,
the ``logits`` layer as ``classifier``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from danmaku.finetune.data import Encoded, encode_rows
from danmaku.pretrain.loading import LoadedBert

EVAL_BATCH = 128


def build_classifier(bert: LoadedBert, num_classes: int, *, dropout: float | None = None) -> Any:
    """keras-hub ``BertTextClassifier`` on ``bert.backbone`` (shared, not copied), head random.

    ``dropout`` defaults to the model's ``hidden_dropout_prob`` (Google's
    ``run_classifier.py`` and HF's ``classifier_dropout=None`` do the same).
    """
    import keras_hub

    rate = bert.config.hidden_dropout_prob if dropout is None else dropout
    return keras_hub.models.BertTextClassifier(backbone=bert.backbone, num_classes=num_classes,
                                               preprocessor=None, dropout=rate)


def head_of(classifier: Any, labels: Sequence[str]):
    from danmaku.pretrain.checkpoints import ClassifierHead

    dense = classifier.output_dense
    return ClassifierHead(kernel=np.asarray(dense.kernel.numpy()), bias=np.asarray(dense.bias.numpy()),
                          labels=tuple(labels))


def export_hf(classifier: Any, bert: LoadedBert, labels: Sequence[str], out_dir: str | Path,
              *, max_seq_len: int) -> Path:
    """The classifier as an HF ``BertForSequenceClassification`` directory (safetensors + tokenizer)."""
    from danmaku.pretrain.checkpoints import google_weights, write_hf

    return write_hf(google_weights(classifier), bert.config, bert.vocab_path, out_dir,
                    head=head_of(classifier, labels), model_max_length=max_seq_len)


class Predictor:
    """Logits of a classifier for encoded rows, length-batched, one ``tf.function`` trace.

    Example:
        >>> predictor = Predictor(classifier)
        >>> predictor.logits(encoded).argmax(axis=1)
    """

    def __init__(self, classifier: Any, batch_size: int = EVAL_BATCH) -> None:
        import tensorflow as tf

        self.classifier = classifier
        self.batch_size = batch_size
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec], reduce_retracing=True)
        def run(token_ids, padding_mask):
            return classifier({"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids),
                               "padding_mask": padding_mask}, training=False)

        self._run = run

    def logits(self, data: Encoded, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        from danmaku.embed.encoder import plan_batches

        out = np.zeros((len(data), int(self.classifier.num_classes)), dtype=np.float32)
        for rows in plan_batches(data.lengths.tolist(), self.batch_size):
            ids, mask, _ = data.batch(rows)
            out[rows] = self._run(ids, mask).numpy()
            if on_batch is not None:
                on_batch(len(rows))
        return out


def load_classifier(hf_dir: str | Path) -> tuple[Any, LoadedBert, tuple[str, ...]]:
    """A classifier exported by ``export_hf`` (or any HF ``BertForSequenceClassification``
    with a Google-GELU config), back in keras-hub: (classifier, the loaded BERT, labels)."""
    from danmaku.pretrain.checkpoints import read_hf_head
    from danmaku.pretrain.loading import load_bert

    head = read_hf_head(hf_dir)
    if head is None:
        raise ValueError(f"{hf_dir} holds no classifier head (classifier.weight); is it a "
                         "BertForSequenceClassification export?")
    bert = load_bert(hf_dir)
    classifier = build_classifier(bert, len(head.labels))
    classifier.output_dense.kernel.assign(head.kernel)
    classifier.output_dense.bias.assign(head.bias)
    return classifier, bert, head.labels


def predict_texts(classifier: Any, bert: LoadedBert, texts: Sequence[str], max_seq_len: int) -> np.ndarray:
    """Logits for raw texts (tokenized with the model's vocabulary, Google-exact)."""
    from danmaku.text.tokenizer import BertTokenizer

    tokenizer = BertTokenizer(bert.vocab_path, do_lower_case=True)
    data = encode_rows(tokenizer, list(texts), [0] * len(texts), max_seq_len)
    return Predictor(classifier).logits(data)
