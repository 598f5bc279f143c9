"""The model and its checkpoints against two independent references.

* Google's own TF1 graph (``bert-tensorflow``'s ``modeling.py`` and
  ``run_pretraining.py`` heads, see ``tests/google_tf1.py``) gives the variable
  names and shapes a Google checkpoint must have, writes a Google checkpoint
  with ``tf.compat.v1.train.Saver`` and computes Google's log-probabilities;
* a tiny random ``transformers.BertForPreTraining`` (torch, ``gelu_new`` =
  Google's GELU) is the numeric oracle for MLM and NSP logits.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import torch
from transformers import BertConfig as HFConfig
from transformers import BertForPreTraining

from danmaku.pretrain.checkpoints import (
    assign_google_weights,
    google_shapes,
    google_weights,
    hf_state_dict,
    newest_checkpoint,
    write_google_checkpoint,
)
from danmaku.pretrain.config import BertConfig
from danmaku.pretrain.export import export_model
from danmaku.pretrain.loading import load_bert
from danmaku.pretrain.model import BertPretrainer
from tests.conftest import SHARED_DATA
from tests.support.google_tf1 import google_pretraining_graph, google_tf1

V, H, L, A, FF, P = 120, 32, 2, 4, 64, 64
CONFIG = BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=A,
                    intermediate_size=FF, max_position_embeddings=P)
B, S, M = 3, 24, 4


def _write_vocab(path: Path) -> Path:
    with open(SHARED_DATA / "vocab.txt", encoding="utf-8") as handle:
        path.write_text("".join(next(handle) for _ in range(V)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hf_model() -> BertForPreTraining:
    """A random torch BERT whose every weight (biases and LayerNorms too) is non-trivial."""
    torch.manual_seed(7)
    model = BertForPreTraining(HFConfig(
        vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=A, intermediate_size=FF,
        max_position_embeddings=P, hidden_act="gelu_new", initializer_range=0.2,
    )).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (B, S), dtype=np.int32)
    mask = np.ones((B, S), np.int32)
    mask[1, 17:] = 0
    mask[2, 9:] = 0
    seg = np.zeros((B, S), np.int32)
    seg[0, 10:] = 1
    seg[1, 8:17] = 1
    pos = np.array([[1, 4, 9, 20], [2, 3, 16, 0], [5, 8, 0, 0]], np.int32)
    return {"input_ids": ids, "input_mask": mask, "segment_ids": seg, "masked_lm_positions": pos,
            "masked_lm_ids": rng.integers(0, V, (B, M), dtype=np.int32),
            "masked_lm_weights": (pos > 0).astype(np.float32),
            "next_sentence_labels": np.array([[0], [1], [0]], np.int32)}


def _ours(bert, batch) -> dict[str, np.ndarray]:
    out = bert.pretrainer({"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
                           "padding_mask": batch["input_mask"],
                           "mask_positions": batch["masked_lm_positions"]}, training=False)
    return {k: np.asarray(v) for k, v in out.items()}


def _torch(hf_model, batch) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        r = hf_model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                     token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
                     attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long))
    mlm = np.take_along_axis(r.prediction_logits.numpy(), batch["masked_lm_positions"][:, :, None], axis=1)
    return mlm, r.seq_relationship_logits.numpy()


def _hf_key(google: str) -> str:
    """HF's name for a Google variable (the rule of HF's original TF-checkpoint converter)."""
    fixed = {"cls/predictions/output_bias": "cls.predictions.bias",
             "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
             "cls/seq_relationship/output_bias": "cls.seq_relationship.bias"}
    if google in fixed:
        return fixed[google]
    name = re.sub(r"layer_(\d+)", r"layer.\1", google).replace("/", ".")
    name = re.sub(r"\.(kernel|gamma)$", ".weight", name)
    name = re.sub(r"\.beta$", ".bias", name)
    return name + ".weight" if name.endswith("_embeddings") else name


@pytest.fixture(scope="module")
def google_dir(hf_model, tmp_path_factory) -> Path:
    """The torch weights as a Google model dir, written by Google's graph and TF1 Saver."""
    out = tmp_path_factory.mktemp("google")
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    v1 = google_tf1().tf
    graph, _, _ = google_pretraining_graph(CONFIG.to_dict(), B, S, M)
    with graph.as_default(), v1.Session(graph=graph) as sess:
        for var in v1.global_variables():
            name = var.name[:-2]
            value = state[_hf_key(name)]
            var.load(value.T if name.endswith("kernel") else value, sess)
        v1.train.Saver(v1.global_variables()).save(sess, str(out / "bert_model.ckpt"),
                                                    write_meta_graph=False, write_state=False)
    (out / "bert_config.json").write_text(json.dumps(CONFIG.to_dict()))
    _write_vocab(out / "vocab.txt")
    return out


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(out)
    _write_vocab(out / "vocab.txt")
    return out


def test_variable_names_and_shapes_are_googles():
    graph, _, _ = google_pretraining_graph(CONFIG.to_dict(), B, S, M)
    with graph.as_default():
        names = [(v.name[:-2], tuple(v.shape.as_list())) for v in google_tf1().tf.global_variables()]
    assert names == list(google_shapes(CONFIG).items())


def test_google_checkpoint_matches_torch(google_dir, hf_model, batch):
    bert = load_bert(google_dir)
    assert bert.heads_loaded and bert.config == CONFIG
    ours = _ours(bert, batch)
    mlm, nsp = _torch(hf_model, batch)
    np.testing.assert_allclose(ours["mlm_logits"], mlm, atol=1e-4)
    np.testing.assert_allclose(ours["nsp_logits"], nsp, atol=1e-4)


def test_hf_directory_matches_torch(hf_dir, hf_model, batch):
    bert = load_bert(hf_dir)
    ours = _ours(bert, batch)
    mlm, nsp = _torch(hf_model, batch)
    np.testing.assert_allclose(ours["mlm_logits"], mlm, atol=1e-4)
    np.testing.assert_allclose(ours["nsp_logits"], nsp, atol=1e-4)


def test_packed_heads_score_only_the_real_slots(google_dir, hf_model, batch):
    """The trainer's packed forward: torch's logits at the real masked slots, in row order,
    and the same masked-LM loss and gradients as the padded forward."""
    from danmaku.pretrain.losses import pretraining_losses
    from danmaku.pretrain.model import pack_labels

    model = load_bert(google_dir).pretrainer
    inputs = {"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
              "padding_mask": batch["input_mask"], "mask_positions": batch["masked_lm_positions"]}
    labels = {"masked_lm_ids": batch["masked_lm_ids"], "masked_lm_weights": batch["masked_lm_weights"],
              "next_sentence_labels": batch["next_sentence_labels"][:, 0]}
    packed, keep = model.packed_outputs(inputs, tf.constant(labels["masked_lm_weights"]))
    real = batch["masked_lm_weights"] > 0
    assert packed["mlm_logits"].shape == (real.sum(), V) == (9, V)
    mlm, nsp = _torch(hf_model, batch)
    np.testing.assert_allclose(packed["mlm_logits"], mlm[real], atol=1e-4)
    np.testing.assert_allclose(packed["nsp_logits"], nsp, atol=1e-4)

    def loss_and_grads(forward):
        with tf.GradientTape() as tape:
            values = pretraining_losses(*forward())
        grads = tape.gradient(values["loss"], model.trainable_variables)
        return values, [tf.convert_to_tensor(g).numpy() for g in grads]

    def packed_forward():
        outputs, kept_slots = model.packed_outputs(inputs, tf.constant(labels["masked_lm_weights"]))
        return outputs, pack_labels(labels, kept_slots)

    padded, padded_grads = loss_and_grads(lambda: (model(inputs), labels))
    kept, kept_grads = loss_and_grads(packed_forward)
    for name in ("loss", "mlm_loss_sum", "mlm_correct", "mlm_weight", "nsp_loss_sum"):
        np.testing.assert_allclose(kept[name], padded[name], rtol=1e-5, err_msg=name)
    assert float(kept["mlm_weight"]) == 9
    for variable, a, b in zip(model.trainable_variables, kept_grads, padded_grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=variable.path)


def test_masked_lm_cross_entropy_is_torchs_on_extreme_logits():
    """log-sum-exp minus the label's logit: torch's cross-entropy, also where exp() would overflow."""
    from danmaku.pretrain.losses import masked_lm_cross_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 30, (2, 5, 50)).astype(np.float32)
    logits[0, 0] += 1e4  # every exp() overflows float32 without the max taken out
    logits[1, 2, 7] = 500.0  # one dominant token: its loss is ~0 where it is the label
    ids = rng.integers(0, 50, (2, 5)).astype(np.int32)
    ids[1, 2] = 7
    ours = masked_lm_cross_entropy(tf.constant(logits), tf.constant(ids)).numpy()
    theirs = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, 50),
                                               torch.tensor(ids, dtype=torch.long).reshape(-1),
                                               reduction="none").numpy().reshape(2, 5)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    assert ours[1, 2] < 1e-6
    flat = masked_lm_cross_entropy(tf.constant(logits.reshape(10, 50)), tf.constant(ids.reshape(10))).numpy()
    np.testing.assert_allclose(flat, ours.reshape(10), rtol=1e-6)


def test_googles_graph_on_our_export(google_dir, batch, tmp_path):
    """Google's own code, restoring our exported checkpoint, computes what we compute."""
    bert = load_bert(google_dir)
    export_model(bert, tmp_path / "g", fmt="google", step=42)
    prefix = newest_checkpoint(tmp_path / "g")
    assert prefix is not None and prefix.name == "model.ckpt-42"
    v1 = google_tf1().tf
    graph, ph, out = google_pretraining_graph(CONFIG.to_dict(), B, S, M)
    with graph.as_default(), v1.Session(graph=graph) as sess:
        # bert-as-service / run_pretraining load weights exactly like this.
        v1.train.init_from_checkpoint(str(prefix), {"bert/": "bert/", "cls/": "cls/"})
        sess.run(v1.global_variables_initializer())
        got = sess.run(out, {ph[k]: batch[k] for k in ph})
    ours = _ours(bert, batch)
    logp = tf.nn.log_softmax(ours["mlm_logits"]).numpy().reshape(B * M, V)
    np.testing.assert_allclose(got["mlm_log_probs"], logp, atol=1e-4)
    np.testing.assert_allclose(got["nsp_log_probs"], tf.nn.log_softmax(ours["nsp_logits"]).numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(got["sequence_output"], ours["sequence_output"], atol=1e-4)


def test_exported_google_checkpoint_lists_googles_variables(google_dir, tmp_path):
    export_model(load_bert(google_dir), tmp_path, fmt="google", step=7)
    listed = dict(tf.train.list_variables(str(tmp_path / "model.ckpt-7")))
    expected = {k: list(v) for k, v in google_shapes(CONFIG).items()} | {"global_step": []}
    assert listed == expected
    reader = tf.train.load_checkpoint(str(tmp_path / "model.ckpt-7"))
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
    assert reader.get_variable_to_dtype_map()["bert/pooler/dense/kernel"] == tf.float32
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-7")
    assert json.loads((tmp_path / "bert_config.json").read_text()) == CONFIG.to_dict()


def test_round_trips_are_bit_exact(google_dir, tmp_path):
    bert = load_bert(google_dir)
    original = google_weights(bert.pretrainer)
    for fmt in ("google", "hf"):
        export_model(bert, tmp_path / fmt, fmt=fmt, step=3)
        again = google_weights(load_bert(tmp_path / fmt).pretrainer)
        assert again.keys() == original.keys()
        for name in original:
            assert np.array_equal(again[name], original[name]), (fmt, name)
    # transformers reads the HF export to exactly our numbers (tied decoder included)
    hf = BertForPreTraining.from_pretrained(tmp_path / "hf")
    state = hf.state_dict()
    for name, value in original.items():
        theirs = state[_hf_key(name)].numpy()
        assert np.array_equal(theirs.T if name.endswith("kernel") else theirs, value), name
    assert np.array_equal(state["cls.predictions.decoder.weight"].numpy(),
                          original["bert/embeddings/word_embeddings"])
    assert hf.config.hidden_act == "gelu_new"


def test_bad_models_give_clear_errors(google_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        load_bert(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no model"):
        load_bert(empty)
    with pytest.raises(FileNotFoundError, match="model.ckpt-99"):
        load_bert(google_dir, ckpt_name="model.ckpt-99")

    # a checkpoint that lacks a layer
    weights = google_weights(load_bert(google_dir).pretrainer)
    broken = tmp_path / "broken"
    shutil.copytree(google_dir, broken)
    for f in broken.glob("bert_model.ckpt*"):
        f.unlink()
    del weights["bert/encoder/layer_1/output/dense/kernel"]
    write_google_checkpoint(weights, broken / "model.ckpt-1")
    with pytest.raises(ValueError, match="lacks 1 variable.*layer_1/output/dense/kernel"):
        load_bert(broken)

    # a vocabulary that does not fit the config
    mismatch = tmp_path / "mismatch"
    shutil.copytree(google_dir, mismatch)
    (mismatch / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(ValueError, match="vocab/config mismatch.*2 tokens.*vocab_size=120"):
        load_bert(mismatch)

    # a config that does not fit the checkpoint
    wrong = tmp_path / "wrong"
    shutil.copytree(google_dir, wrong)
    (wrong / "bert_config.json").write_text(json.dumps(CONFIG.to_dict() | {"intermediate_size": 48}))
    with pytest.raises(ValueError, match="does not fit the config.*intermediate/dense/kernel"):
        load_bert(wrong)

    # a corrupt data file
    corrupt = tmp_path / "corrupt"
    shutil.copytree(google_dir, corrupt)
    data = next(corrupt.glob("bert_model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read"):
        load_bert(corrupt)


def test_tuned_dir_like_bert_as_service(google_dir, tmp_path):
    """Config and vocab from the model dir, weights from tuned_dir/ckpt_name."""
    bert = load_bert(google_dir)
    weights = google_weights(bert.pretrainer)
    weights["bert/pooler/dense/bias"] = weights["bert/pooler/dense/bias"] + 1.0
    write_google_checkpoint(weights, tmp_path / "model.ckpt-12000", global_step=12000)
    tuned = load_bert(google_dir, tuned_dir=tmp_path, ckpt_name="model.ckpt-12000")
    assert tuned.step == 12000
    np.testing.assert_array_equal(google_weights(tuned.pretrainer)["bert/pooler/dense/bias"],
                                  weights["bert/pooler/dense/bias"])
    assert tuned.vocab_path == google_dir / "vocab.txt"


@pytest.mark.parametrize("stddev", [0.02, 0.2])
def test_weights_are_drawn_with_the_configs_initializer_range(stddev):
    """Google's ``modeling.py`` draws every kernel and table from truncated_normal(initializer_range).

    keras-hub's backbone always uses 0.02; the oracle is TensorFlow's own
    ``truncated_normal`` with the config's stddev (biases stay 0, LayerNorm 1/0).
    """
    config = BertConfig(**(CONFIG.to_dict() | {"initializer_range": stddev, "vocab_size": 2000}))
    weights = google_weights(BertPretrainer.from_bert_config(config))
    oracle = float(np.std(tf.random.truncated_normal([200_000], stddev=stddev, seed=1).numpy()))
    drawn = [name for name in weights if name.endswith(("kernel", "embeddings", "output_weights"))
             and "LayerNorm" not in name]
    assert {"bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
            "bert/encoder/layer_1/attention/self/query/kernel", "bert/pooler/dense/kernel",
            "cls/predictions/transform/dense/kernel", "cls/seq_relationship/output_weights"} <= set(drawn)
    for name in drawn:
        values = np.asarray(weights[name])
        assert np.abs(values).max() <= 2 * stddev + 1e-7, name
        if values.size >= 1000:
            assert abs(values.std() / oracle - 1) < 0.1, (name, values.std(), oracle)
    assert not np.asarray(weights["bert/encoder/layer_0/output/dense/bias"]).any()


def test_sinusoidal_position_start():
    """The position table starts as Vaswani et al.'s codes: PE(p, 2i) = sin(p / 10000^(2i/d)), then cos.

    Checked entry by entry with ``math`` and scaled to the config's
    initializer_range; the table is an ordinary weight (Google's name, shape).
    """
    import math

    config = BertConfig(**(CONFIG.to_dict() | {"initializer_range": 0.1}))
    table = np.asarray(google_weights(BertPretrainer.from_bert_config(
        config, position_init="sinusoidal"))["bert/embeddings/position_embeddings"])
    assert table.shape == (P, H)
    assert table.std() == pytest.approx(0.1, rel=1e-5)
    scale = table[0, 1]  # cos(0) = 1
    for p, i in [(1, 0), (5, 3), (63, 7), (40, 15)]:
        angle = p / 10000 ** (2 * i / H)
        assert table[p, 2 * i] == pytest.approx(scale * math.sin(angle), abs=1e-6)
        assert table[p, 2 * i + 1] == pytest.approx(scale * math.cos(angle), abs=1e-6)
    random = np.asarray(google_weights(BertPretrainer.from_bert_config(config))[
        "bert/embeddings/position_embeddings"])
    assert abs(np.corrcoef(random[:-1].ravel(), random[1:].ravel())[0, 1]) < 0.1  # no neighbour structure
    with pytest.raises(ValueError, match="position_init must be one of random, sinusoidal"):
        BertPretrainer.from_bert_config(config, position_init="learned")


def test_zero_init_layers_start_as_their_layer_norms(batch):
    """``zero_init_layers=1``: the last layer's two residual-branch output kernels start at 0, so that
    layer starts as LayerNorm of its input -- checked on HF's torch BERT loaded with the same weights
    (its last hidden state against ``layer_norm`` of the one before), and our model agrees with it."""
    config = BertConfig(**(CONFIG.to_dict() | {"initializer_range": 0.1}))
    weights = google_weights(BertPretrainer.from_bert_config(config, zero_init_layers=1))
    for kernel in ("attention/output/dense/kernel", "output/dense/kernel"):
        assert not np.asarray(weights[f"bert/encoder/layer_{L - 1}/{kernel}"]).any()
        assert np.asarray(weights[f"bert/encoder/layer_0/{kernel}"]).std() > 0.05
    hf = BertForPreTraining(HFConfig(
        vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=A, intermediate_size=FF,
        max_position_embeddings=P, hidden_act="gelu_new", layer_norm_eps=1e-12)).eval()
    missing, unexpected = hf.load_state_dict(
        {k: torch.tensor(v) for k, v in hf_state_dict(weights).items()}, strict=False)
    assert not unexpected and all("decoder" in k for k in missing)  # the tied decoder
    with torch.no_grad():
        hidden = hf.bert(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                         token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
                         attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
                         output_hidden_states=True).hidden_states
    as_layer_norm = torch.nn.functional.layer_norm(hidden[-2], (H,), eps=1e-12)
    np.testing.assert_allclose(hidden[-1].numpy(), as_layer_norm.numpy(), atol=1e-5)
    first = torch.nn.functional.layer_norm(hidden[0], (H,), eps=1e-12)
    assert (hidden[1] - first).abs().mean() > 0.1  # the first layer is not near the identity
    model = BertPretrainer.from_bert_config(config)
    assign_google_weights(model, weights)
    ours = model({"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
                  "padding_mask": batch["input_mask"], "mask_positions": batch["masked_lm_positions"]})
    np.testing.assert_allclose(np.asarray(ours["sequence_output"]), hidden[-1].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="zero_init_layers must be between 0 and the 2 encoder layers"):
        BertPretrainer.from_bert_config(config, zero_init_layers=3)
