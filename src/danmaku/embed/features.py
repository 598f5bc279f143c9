"""Per-layer token vectors from keras-hub's ``BertBackbone``, through its own graph.

bert-as-service pooled any encoder layer (``-pooling_layer``); keras-hub's
backbone only exposes the last one. Rather than re-implementing BERT, we cut a
sub-model out of the backbone's functional graph whose outputs are the
``transformer_layer_i`` outputs we need: same layers, same weights, nothing
computed above the highest layer asked for, no pooler. It is wrapped in one
``tf.function`` with dynamic batch and length so that length-sorted batches of
any size reuse one trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


class LayerFeatures:
    """Callable ``(token_ids, input_mask) -> [batch, seq, hidden * len(layers)]``.

    Args:
        backbone: a built keras-hub ``BertBackbone`` (weights loaded).
        layers: 0-based transformer layer numbers, in the order their outputs are
            concatenated (see ``pooling.resolve_layers``).

    Example:
        >>> features = LayerFeatures(loaded.backbone, [11])
        >>> features(np.array([[101, 2769, 102]]), np.array([[1, 1, 1]])).shape
        (1, 3, 768)
    """

    def __init__(self, backbone: keras.Model, layers: Sequence[int]) -> None:
        self.layers = list(layers)
        outputs = [backbone.get_layer(f"transformer_layer_{i}").output for i in self.layers]
        self._model = keras.Model(inputs=backbone.inputs, outputs=outputs)
        self.hidden = int(backbone.hidden_dim) * len(self.layers)
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec], reduce_retracing=True)
        def run(token_ids: tf.Tensor, input_mask: tf.Tensor) -> tf.Tensor:
            out = self._model(
                {
                    "token_ids": token_ids,
                    "segment_ids": tf.zeros_like(token_ids),
                    "padding_mask": input_mask,
                },
                training=False,
            )
            if isinstance(out, (list, tuple)):
                out = tf.concat(list(out), axis=-1) if len(out) > 1 else out[0]
            return out

        self._run = run

    def __call__(self, token_ids: np.ndarray, input_mask: np.ndarray) -> np.ndarray:
        out = self._run(
            tf.convert_to_tensor(token_ids, tf.int32), tf.convert_to_tensor(input_mask, tf.int32)
        )
        return out.numpy()
