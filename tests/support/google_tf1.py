"""Google's TF1 ``modeling.py``, ``run_pretraining.py`` and ``optimization.py`` as test oracles.

``bert-tensorflow`` targets TF 1.15: it imports ``tensorflow.compat.v1`` but
still calls ``tf.layers.dense`` and ``tf.contrib.layers.layer_norm``, which
TF 2.x with Keras 3 no longer has, and ``run_pretraining`` defines absl flags
that clash with ``create_pretraining_data``'s. We import the three modules
against a stand-in for ``tensorflow.compat.v1`` that forwards everything to
the real one except:

* ``layers.dense`` / ``contrib.layers.layer_norm``: the variables and math TF
  1.15 creates (``<scope>/kernel``, ``<scope>/bias``; ``LayerNorm/beta``,
  ``LayerNorm/gamma``, epsilon 1e-12), built with ``get_variable``;
* ``flags``: absl flags bound to a private ``FlagValues``.

Everything else -- variable scopes and names, GELU, attention, the heads, the
losses, the optimizer and its schedule -- is Google's code running in a TF1
graph. Never imported by danmaku itself.
"""

from __future__ import annotations

import functools
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _dense(v1, inputs, units, activation=None, name=None, kernel_initializer=None, **_):
    with v1.variable_scope(name or "dense"):
        kernel = v1.get_variable("kernel", [int(inputs.shape[-1]), units], initializer=kernel_initializer)
        bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
        out = v1.nn.bias_add(v1.matmul(inputs, kernel), bias)
        return activation(out) if activation is not None else out


def _layer_norm(v1, inputs, begin_norm_axis=-1, begin_params_axis=-1, scope=None, **_):
    with v1.variable_scope(scope or "LayerNorm"):
        depth = int(inputs.shape[-1])
        beta = v1.get_variable("beta", [depth], initializer=v1.zeros_initializer())
        gamma = v1.get_variable("gamma", [depth], initializer=v1.ones_initializer())
        mean, variance = v1.nn.moments(inputs, [begin_norm_axis], keepdims=True)
        return v1.nn.batch_normalization(inputs, mean, variance, beta, gamma, variance_epsilon=1e-12)


@functools.cache
def google_tf1() -> types.SimpleNamespace:
    """``modeling``, ``run_pretraining``, ``optimization`` and ``tf`` (the real compat.v1)."""
    import tensorflow as tf
    from absl import flags as absl_flags

    v1 = tf.compat.v1
    private_flags = absl_flags.FlagValues()

    flag_ns = types.SimpleNamespace(FLAGS=private_flags)
    for kind in ("string", "integer", "float", "bool", "boolean"):
        definer = getattr(absl_flags, f"DEFINE_{kind}")
        setattr(flag_ns, f"DEFINE_{kind}", functools.partial(definer, flag_values=private_flags))
    flag_ns.mark_flag_as_required = lambda *a, **k: None

    shim = types.ModuleType("tensorflow.compat.v1 (bert-tensorflow shim)")
    shim.__getattr__ = lambda name: getattr(v1, name)  # type: ignore[method-assign]
    shim.layers = types.SimpleNamespace(dense=functools.partial(_dense, v1))
    shim.flags = flag_ns
    contrib = types.ModuleType("tensorflow.contrib")
    contrib.layers = types.SimpleNamespace(layer_norm=functools.partial(_layer_norm, v1))

    sys.modules.setdefault("tensorflow.contrib", contrib)
    original_attr, original_module = tf.compat.v1, sys.modules.get("tensorflow.compat.v1")
    tf.compat.v1 = shim
    sys.modules["tensorflow.compat.v1"] = shim
    try:
        for name in ("bert.modeling", "bert.optimization", "bert.run_pretraining"):
            sys.modules.pop(name, None)
        import bert.modeling as modeling
        import bert.optimization as optimization
        import bert.run_pretraining as run_pretraining
    finally:
        tf.compat.v1 = original_attr
        if original_module is not None:
            sys.modules["tensorflow.compat.v1"] = original_module
    for module in (modeling, optimization, run_pretraining):
        module.tf = shim  # their functions look ``tf`` up at call time
    modeling.contrib_layers = contrib.layers
    return types.SimpleNamespace(modeling=modeling, run_pretraining=run_pretraining,
                                 optimization=optimization, tf=v1)


def google_pretraining_graph(config_dict: dict, batch: int, seq: int, predictions: int):
    """Google's BertModel + heads in a fresh graph, fed by placeholders.

    Returns (graph, placeholders dict, outputs dict with mlm/nsp log-probs and losses).
    """
    g = google_tf1()
    v1 = g.tf
    graph = v1.Graph()
    with graph.as_default():
        cfg = g.modeling.BertConfig.from_dict(config_dict)
        ph = {
            "input_ids": v1.placeholder(v1.int32, [batch, seq]),
            "input_mask": v1.placeholder(v1.int32, [batch, seq]),
            "segment_ids": v1.placeholder(v1.int32, [batch, seq]),
            "masked_lm_positions": v1.placeholder(v1.int32, [batch, predictions]),
            "masked_lm_ids": v1.placeholder(v1.int32, [batch, predictions]),
            "masked_lm_weights": v1.placeholder(v1.float32, [batch, predictions]),
            "next_sentence_labels": v1.placeholder(v1.int32, [batch, 1]),
        }
        is_training = v1.placeholder_with_default(False, [])
        model = g.modeling.BertModel(
            config=cfg, is_training=False, input_ids=ph["input_ids"], input_mask=ph["input_mask"],
            token_type_ids=ph["segment_ids"], use_one_hot_embeddings=False,
        )
        mlm_loss, mlm_example_loss, mlm_log_probs = g.run_pretraining.get_masked_lm_output(
            cfg, model.get_sequence_output(), model.get_embedding_table(),
            ph["masked_lm_positions"], ph["masked_lm_ids"], ph["masked_lm_weights"],
        )
        nsp_loss, nsp_example_loss, nsp_log_probs = g.run_pretraining.get_next_sentence_output(
            cfg, model.get_pooled_output(), ph["next_sentence_labels"],
        )
        outputs = dict(
            mlm_loss=mlm_loss, mlm_example_loss=mlm_example_loss, mlm_log_probs=mlm_log_probs,
            nsp_loss=nsp_loss, nsp_example_loss=nsp_example_loss, nsp_log_probs=nsp_log_probs,
            total_loss=mlm_loss + nsp_loss, sequence_output=model.get_sequence_output(),
            is_training=is_training,
        )
    return graph, ph, outputs
