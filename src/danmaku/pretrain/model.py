"""``BertPretrainer``: keras-hub's ``BertBackbone`` with Google's two pretraining heads.

Google's ``run_pretraining.py`` puts two heads on ``modeling.BertModel``:

* masked LM (``cls/predictions``): gather the hidden states at the masked
  positions, dense + GELU + LayerNorm ("transform"), multiply by the *token
  embedding* transposed (tied weights), add a per-token output bias;
* next sentence (``cls/seq_relationship``): a 2-way linear layer on the pooled
  ``[CLS]`` output.

keras-hub's ``MaskedLMHead`` is exactly the first when it is given the backbone's
token embedding and Google's GELU; keras-hub's own ``BertMaskedLM`` uses the erf
GELU and default LayerNorm epsilon in its head, so it is not used. The backbone
itself (post-LayerNorm blocks, epsilon 1e-12, tanh GELU) matches Google's
``modeling.py``. Variable-by-variable correspondence with Google's checkpoints
lives in ``pretrain/checkpoints.py``.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
import numpy as np
from keras_hub.src.utils.keras_utils import gelu_approximate

from danmaku.pretrain.config import GOOGLE_GELU, POSITION_INITS, BertConfig

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask", "mask_positions")
BACKBONE_INPUTS = INPUT_NAMES[:3]  # what the encoder reads; both forwards below pass these


def build_backbone(config: BertConfig, *, dtype: Any = None) -> keras_hub.models.BertBackbone:
    """A randomly initialised keras-hub ``BertBackbone`` of ``config``'s shape.

    Weights are drawn as Google's ``modeling.py`` draws them: truncated normal
    with the config's ``initializer_range`` (biases 0, LayerNorm 1/0).

    keras-hub uses one dropout rate for hidden states and attention
    probabilities; a config where Google's two differ is refused rather than
    silently changed.
    """
    if config.hidden_act != GOOGLE_GELU:
        raise ValueError(f"hidden_act {config.hidden_act!r} is not supported (only Google's 'gelu')")
    if config.hidden_dropout_prob != config.attention_probs_dropout_prob:
        raise ValueError(
            "keras-hub's BertBackbone has one dropout rate; this config has hidden_dropout_prob="
            f"{config.hidden_dropout_prob} and attention_probs_dropout_prob="
            f"{config.attention_probs_dropout_prob}"
        )
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=config.vocab_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        hidden_dim=config.hidden_size,
        intermediate_dim=config.intermediate_size,
        dropout=config.hidden_dropout_prob,
        max_sequence_length=config.max_position_embeddings,
        num_segments=config.type_vocab_size,
        dtype=dtype,
    )
    if config.initializer_range != KERAS_HUB_INIT_STDDEV:
        _redraw_weights(backbone, config.initializer_range)
    return backbone


# keras-hub's BertBackbone draws every kernel and embedding table from
# TruncatedNormal(0.02) whatever the config says; Google's modeling.py uses the
# config's initializer_range for all of them.
KERAS_HUB_INIT_STDDEV = 0.02


def _redraw_weights(backbone: keras_hub.models.BertBackbone, stddev: float) -> None:
    """Draw the kernels and embedding tables again from Google's TruncatedNormal(``stddev``)."""
    init = keras.initializers.TruncatedNormal(stddev=stddev)
    for variable in backbone.weights:
        if variable.path.endswith(("/kernel", "/embeddings")):
            variable.assign(keras.ops.cast(init(variable.shape), variable.dtype))


def sinusoidal_positions(positions: int, width: int, *, stddev: float) -> np.ndarray:
    """The Transformer paper's sine/cosine position codes, scaled to ``stddev``, as a start for BERT's table.

    Why (bench/quality.py, 2026-12-01): from scratch, a random table gives every
    position its own unrelated vector, so "attend to my neighbour" must be
    learnt for each position separately; sinusoids make neighbours similar from
    step 0 (one rotation serves all offsets). With the weights drawn at
    initializer_range 0.1, 800 steps of the demo reached 0.172 held-out masked-LM
    accuracy against 0.150 with a random position table. The table
    stays an ordinary learnt weight, so the model is a standard BERT.
    """
    position = np.arange(positions, dtype=np.float64)[:, None]
    rate = 1.0 / 10000.0 ** (np.arange(0, width, 2, dtype=np.float64) / width)
    table = np.zeros((positions, width))
    table[:, 0::2] = np.sin(position * rate)
    table[:, 1::2] = np.cos(position * rate[: width // 2])
    return (table * (stddev / table.std())).astype(np.float32)


def zero_residual_outputs(backbone: keras_hub.models.BertBackbone, layers: int) -> None:
    """Start the last ``layers`` encoder layers with both residual branches' output projections at zero.

    The attention-output and feed-forward-output kernels (Google's
    ``attention/output/dense`` and ``output/dense``) of those layers start at 0,
    so each such layer starts by passing its input through its two LayerNorms
    only; the zero kernels get gradients from the first step (their inputs are
    not zero) and grow from there. Zero-initialised residual branches are the
    SkipInit/Fixup idea (ResNets zero their blocks' last BatchNorm scale).

    Why (bench/quality.py, 2026-12-01): with the demo's 0.1-wide weights each
    random branch is as large as the residual stream it is added to (its
    standard deviation 1.3x for the feed-forward, 1.0x for attention; with
    Google's 0.02, a few percent), so a fresh second layer scrambles what the
    first computes; two layers then learnt less per step than one (held-out
    0.184-0.197 in 5 minutes against one layer's 0.230). The last layer at
    zero: 0.214, and per step as fast as one layer; every layer at zero: 0.199.
    In the demo's 15 minutes: 0.291 against 0.260, but the meme score of the
    sentence vectors ends below the random start's, so the demo's default does
    not use it (``demo/recipe.py``). The kernels stay ordinary learnt weights:
    the model is a standard BERT.
    """
    count = len(backbone.transformer_layers)
    if not 0 <= layers <= count:
        raise ValueError(f"zero_init_layers must be between 0 and the {count} encoder layers, got {layers}")
    for layer in backbone.transformer_layers[count - layers:]:
        for dense in (layer._self_attention_layer.output_dense, layer._feedforward_output_dense):
            dense.kernel.assign(keras.ops.zeros_like(dense.kernel))


@keras.saving.register_keras_serializable(package="danmaku")
class BertPretrainer(keras.Model):
    """BERT with Google's masked-LM and next-sentence heads (``BertForPreTraining``).

    Args:
        backbone: a keras-hub ``BertBackbone``.
        initializer_range: stddev of the truncated-normal initializer of the heads.
        dtype: Keras dtype policy for the heads (e.g. ``"mixed_bfloat16"``); the
            logits are always returned in float32 for the losses.

    Inputs (a dict): ``token_ids``, ``segment_ids``, ``padding_mask`` of shape
    ``[batch, seq]`` and ``mask_positions`` ``[batch, max_predictions]``, all int32
    -- Google's ``input_ids``, ``segment_ids``, ``input_mask`` and
    ``masked_lm_positions``.

    Outputs (a dict): ``mlm_logits`` ``[batch, max_predictions, vocab]``,
    ``nsp_logits`` ``[batch, 2]`` (index 0 = "B follows A", Google's label 0),
    and ``sequence_output`` / ``pooled_output`` from the backbone.

    Example:
        >>> cfg = BertConfig.preset("tiny")
        >>> model = BertPretrainer.from_bert_config(cfg)
        >>> out = model({"token_ids": ids, "segment_ids": seg, "padding_mask": mask,
        ...              "mask_positions": pos})
        >>> out["mlm_logits"].shape
        (batch, 20, 21128)
    """

    def __init__(self, backbone: keras_hub.models.BertBackbone, *, initializer_range: float = 0.02,
                 dtype: Any = None, **kwargs: Any) -> None:
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        mlm_head = keras_hub.layers.MaskedLMHead(
            token_embedding=backbone.token_embedding,
            intermediate_activation=gelu_approximate,
            layer_norm_epsilon=1e-12,
            kernel_initializer=init,
            dtype=dtype if dtype is not None else backbone.dtype_policy,
            name="mlm_head",
        )
        nsp_head = keras.layers.Dense(
            2, kernel_initializer=init, dtype=dtype if dtype is not None else backbone.dtype_policy,
            name="nsp_head",
        )
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES
        }
        encoded = backbone({k: inputs[k] for k in BACKBONE_INPUTS})
        mlm_logits = mlm_head(encoded["sequence_output"], mask_positions=inputs["mask_positions"])
        nsp_logits = nsp_head(encoded["pooled_output"])
        outputs = {
            "mlm_logits": keras.ops.cast(mlm_logits, "float32"),
            "nsp_logits": keras.ops.cast(nsp_logits, "float32"),
            "sequence_output": encoded["sequence_output"],
            "pooled_output": encoded["pooled_output"],
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.mlm_head = mlm_head
        self.nsp_head = nsp_head
        self.initializer_range = initializer_range

    @classmethod
    def from_bert_config(cls, config: BertConfig, *, dtype: Any = None,
                         position_init: str = "random", zero_init_layers: int = 0) -> BertPretrainer:
        """A randomly initialised pretrainer of ``config``'s architecture.

        ``position_init="sinusoidal"`` starts the (still learned) position table
        from ``sinusoidal_positions`` instead of random numbers;
        ``zero_init_layers=N`` starts the last N encoder layers' residual
        branches at zero (``zero_residual_outputs``).
        """
        if position_init not in POSITION_INITS:
            raise ValueError(f"position_init must be one of {', '.join(POSITION_INITS)}: {position_init!r}")
        backbone = build_backbone(config, dtype=dtype)
        if position_init == "sinusoidal":
            table = backbone.position_embedding.position_embeddings
            table.assign(sinusoidal_positions(*table.shape, stddev=config.initializer_range))
        zero_residual_outputs(backbone, zero_init_layers)
        return cls(backbone, initializer_range=config.initializer_range, dtype=dtype)

    def packed_outputs(self, inputs: dict[str, Any], mask_weights: Any, *,
                       training: bool = False) -> tuple[dict[str, Any], Any]:
        """The heads' logits for the real masked slots only, and where they came from.

        Google's instances pad every sequence to ``max_predictions`` masked slots;
        on the shared sample 15.3 of 20 are real, and the padded ones weigh 0 in
        every loss and metric. Calling the model scores all of them against the
        whole vocabulary. Here the real slots of the whole batch are gathered
        first (``mask_weights > 0``) and the masked-LM head runs on those alone,
        so the losses and gradients are the model's own to float rounding: for a
        batch of the demo the head and its loss took 63 ms instead of 83 (forward
        and backward, 2 cores).

        Returns ``({"mlm_logits": [n, vocab], "nsp_logits": [batch, 2]}, keep)``
        where ``keep`` (``[n, 2]``: batch row, slot) picks the same slots out of
        the ``[batch, max_predictions]`` labels (``pack_labels``). The number
        of slots ``n`` changes from batch to batch, so XLA, which needs static
        shapes, cannot compile this; the trainer calls the model instead there
        (``--xla``, TPUs).
        """
        import tensorflow as tf

        keep = tf.where(mask_weights > 0)
        rows = tf.cast(keep[:, 0], tf.int32)
        seq_len = tf.shape(inputs["token_ids"])[1]
        flat = rows * seq_len + tf.gather_nd(tf.cast(inputs["mask_positions"], tf.int32), keep)
        encoded = self.backbone({k: inputs[k] for k in BACKBONE_INPUTS},
                                training=training)
        sequence = encoded["sequence_output"]
        whole_batch = tf.reshape(sequence, [1, -1, tf.shape(sequence)[-1]])
        mlm_logits = self.mlm_head(whole_batch, mask_positions=flat[None], training=training)[0]
        nsp_logits = self.nsp_head(encoded["pooled_output"], training=training)
        return {"mlm_logits": keras.ops.cast(mlm_logits, "float32"),
                "nsp_logits": keras.ops.cast(nsp_logits, "float32")}, keep

    def get_config(self) -> dict[str, Any]:
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "initializer_range": self.initializer_range,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BertPretrainer:
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def pack_labels(labels: dict[str, Any], keep: Any) -> dict[str, Any]:
    """``labels`` with the masked-LM ones cut to the slots ``packed_outputs`` kept."""
    import tensorflow as tf

    packed = dict(labels)
    for name in ("masked_lm_ids", "masked_lm_weights"):
        packed[name] = tf.gather_nd(labels[name], keep)
    return packed


def bert_config_of(backbone: keras_hub.models.BertBackbone, *, initializer_range: float = 0.02) -> BertConfig:
    """The ``BertConfig`` a backbone was built from (inverse of ``build_backbone``)."""
    return BertConfig(
        vocab_size=backbone.vocabulary_size,
        hidden_size=backbone.hidden_dim,
        num_hidden_layers=backbone.num_layers,
        num_attention_heads=backbone.num_heads,
        intermediate_size=backbone.intermediate_dim,
        hidden_dropout_prob=backbone.dropout,
        attention_probs_dropout_prob=backbone.dropout,
        max_position_embeddings=backbone.max_sequence_length,
        type_vocab_size=backbone.num_segments,
        initializer_range=initializer_range,
    )
