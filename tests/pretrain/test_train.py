"""Training, evaluation and the ``danmaku pretrain`` commands.

Oracles: Google's ``optimization.create_optimizer`` and ``run_pretraining``
heads running in a TF1 graph (``tests/google_tf1.py``) for the optimizer,
schedule, clipping, weight-decay exclusions and the eval metrics; an
uninterrupted run for kill/resume; the real corpus slice in tests/fixtures for
learning.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint
from danmaku.pretrain.config import BertConfig
from danmaku.pretrain.evaluate import evaluate_split
from danmaku.pretrain.instances import Batch, InstanceOptions, TFRecordWriter, prepare, serialize_batch
from danmaku.pretrain.loading import load_bert
from danmaku.pretrain.model import BertPretrainer
from danmaku.pretrain.train import RunOptions, Trainer, TrainSettings
from tests.conftest import FIXTURES, PYTHONPATH, REPO, SHARED_DATA
from tests.support.google_tf1 import google_pretraining_graph, google_tf1

VOCAB = SHARED_DATA / "vocab.txt"
CORPUS = FIXTURES / "pretrain_corpus"
B, S, M = 4, 24, 4
SMALL = BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, initializer_range=0.2)


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    """A batch whose rows all have 3 real predictions (so micro-batches weigh the same)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(100, 400, (B, S)).astype(np.int32)
    mask = np.ones((B, S), np.int32)
    mask[1, 18:] = 0
    seg = np.zeros((B, S), np.int32)
    seg[:, 12:] = 1
    pos = np.array([[1, 5, 9, 0], [2, 3, 17, 0], [4, 8, 20, 0], [6, 7, 11, 0]], np.int32)
    return {"input_ids": ids, "input_mask": mask, "segment_ids": seg, "masked_lm_positions": pos,
            "masked_lm_ids": rng.integers(100, 400, (B, M)).astype(np.int32),
            "masked_lm_weights": (np.arange(M)[None, :] < 3).repeat(B, 0).astype(np.float32),
            "next_sentence_labels": np.array([[0], [1], [1], [0]], np.int32)}


def _as_inputs(b):
    inputs = {"token_ids": b["input_ids"], "segment_ids": b["segment_ids"], "padding_mask": b["input_mask"],
              "mask_positions": b["masked_lm_positions"]}
    labels = {"masked_lm_ids": b["masked_lm_ids"], "masked_lm_weights": b["masked_lm_weights"],
              "next_sentence_labels": b["next_sentence_labels"][:, 0]}
    return inputs, labels


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory) -> Path:
    """Random weights of SMALL as a Google checkpoint (the common starting point)."""
    import keras

    keras.utils.set_random_seed(1)
    model = BertPretrainer.from_bert_config(SMALL)
    out = tmp_path_factory.mktemp("init")
    write_google_checkpoint(google_weights(model), out / "bert_model.ckpt")
    SMALL.to_json_file(out / "bert_config.json")
    with open(VOCAB, encoding="utf-8") as handle:
        lines = "".join(next(handle) for _ in range(SMALL.vocab_size))
    (out / "vocab.txt").write_text(lines, encoding="utf-8")
    return out / "bert_model.ckpt"


@pytest.mark.parametrize(("micro", "nsp_weight"), [(4, 1.0), (2, 1.0), (4, 0.0)])
def test_training_step_matches_googles_optimizer(init_ckpt, tmp_path, micro, nsp_weight):
    """4 steps of Google's create_optimizer (AdamWeightDecay, warm-up, decay, clip) vs ours,
    with the whole batch, accumulated over two micro-batches, and on the masked-LM loss
    alone (``nsp_weight`` 0: Google's optimizer then skips the pooler and NSP head)."""
    lr, total, warmup, steps = 1e-2, 10, 2, 4
    batch = _batch()
    g = google_tf1()
    v1 = g.tf
    graph, ph, out = google_pretraining_graph(SMALL.to_dict(), B, S, M)
    with graph.as_default(), v1.Session(graph=graph) as sess:
        # run_pretraining.model_fn: init from the checkpoint, then Google's optimizer
        tvars = v1.trainable_variables()
        assignment, _ = g.modeling.get_assignment_map_from_checkpoint(tvars, str(init_ckpt))
        v1.train.init_from_checkpoint(str(init_ckpt), assignment)
        loss = out["total_loss"] if nsp_weight else out["mlm_loss"]
        train_op = g.optimization.create_optimizer(loss, lr, total, warmup, False)
        sess.run(v1.global_variables_initializer())
        for _ in range(steps):
            sess.run(train_op, {ph[k]: batch[k] for k in ph})
        google = {v.name[:-2]: sess.run(v) for v in v1.trainable_variables()}

    trainer = Trainer(tmp_path, SMALL, TrainSettings(steps=total, batch_size=B, micro_batch_size=micro,
                                                     learning_rate=lr, warmup_steps=warmup,
                                                     nsp_weight=nsp_weight),
                      RunOptions(), seq=S, pred=M)
    trainer.restore_or_init(str(init_ckpt))
    before = google_weights(trainer.model)
    iterator = iter(tf.data.Dataset.from_tensors(_as_inputs(batch)).repeat())
    for _ in range(steps):
        trainer.train_step(iterator)
    ours = google_weights(trainer.model)
    assert set(google) == set(ours)
    moved, frozen = 0, 0
    for name, value in google.items():
        # Adam divides by sqrt(v) + 1e-6: where a gradient is ~1e-6 float noise shows,
        # so a few elements may differ by < 1e-4 (the weights move by ~4e-2 here).
        np.testing.assert_allclose(ours[name], value, atol=1e-4, err_msg=name)
        assert np.abs(ours[name] - value).mean() < 2e-6, name
        moved += not np.allclose(before[name], value)
        frozen += np.array_equal(before[name], ours[name])
    # not vacuous: the weights did change -- all but the pooler and NSP head (4) without NSP
    assert frozen == (0 if nsp_weight else 4)
    assert moved == len(google) - frozen


def test_eval_metrics_are_googles(init_ckpt, tmp_path):
    """masked_lm/next_sentence accuracy and loss as run_pretraining's metric_fn computes them."""
    batches = [_batch(seed) for seed in range(3)]
    for b in batches[1:]:
        b["masked_lm_weights"][0, 2] = 0.0  # uneven weights across batches
        b["masked_lm_positions"][0, 2] = 0
    g = google_tf1()
    v1 = g.tf
    graph, ph, out = google_pretraining_graph(SMALL.to_dict(), B, S, M)
    rows = []
    with graph.as_default(), v1.Session(graph=graph) as sess:
        v1.train.init_from_checkpoint(str(init_ckpt), {"bert/": "bert/", "cls/": "cls/"})
        sess.run(v1.global_variables_initializer())
        for b in batches:
            rows.append(sess.run(out, {ph[k]: b[k] for k in ph}) | {"batch": b})
    # metric_fn: tf.metrics.{accuracy,mean} with masked_lm_weights, streaming over batches
    w = np.concatenate([r["batch"]["masked_lm_weights"].reshape(-1) for r in rows])
    ids = np.concatenate([r["batch"]["masked_lm_ids"].reshape(-1) for r in rows])
    pred = np.concatenate([r["mlm_log_probs"].argmax(-1) for r in rows])
    mlm_loss = np.concatenate([r["mlm_example_loss"] for r in rows])
    nsp_pred = np.concatenate([r["nsp_log_probs"].argmax(-1) for r in rows])
    nsp_labels = np.concatenate([r["batch"]["next_sentence_labels"].reshape(-1) for r in rows])
    nsp_loss = np.concatenate([r["nsp_example_loss"] for r in rows])
    expected = {
        "masked_lm_accuracy": (w * (pred == ids)).sum() / w.sum(),
        "masked_lm_loss": (w * mlm_loss).sum() / w.sum(),
        "next_sentence_accuracy": (nsp_pred == nsp_labels).mean(),
        "next_sentence_loss": nsp_loss.mean(),
    }
    shard = tmp_path / "eval-00000.tfrecord"
    writer = TFRecordWriter(shard)
    for b in batches:
        writer.write_many(serialize_batch(Batch(b["input_ids"], b["input_mask"], b["segment_ids"],
                                                b["masked_lm_positions"], b["masked_lm_ids"],
                                                b["masked_lm_weights"], b["next_sentence_labels"][:, 0])))
    writer.close()
    bert = load_bert(init_ckpt.parent)
    got = evaluate_split(bert.pretrainer, [str(shard)], seq=S, pred=M, batch_size=B, max_steps=None)
    assert got["examples"] == 3 * B
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


# ---------------------------------------------------------------------------
# The commands, on the real corpus slice
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("instances")
    prepare(CORPUS, VOCAB, out, opts=InstanceOptions(dupe_factor=3), workers=2, shard_bytes=60_000)
    return out


def _dd(*args: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": PYTHONPATH, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
                        "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-m", "danmaku", "pretrain", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_and_resume_equals_uninterrupted_run(instances, tmp_path):
    config = tmp_path / "bert_config.json"
    BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=128).to_json_file(config)
    common = ["--instances", str(instances), "--bert-config", str(config), "--batch-size", "8",
              "--micro-batch-size", "4", "--steps", "24", "--save-every", "4", "--learning-rate", "1e-3",
              "--deterministic"]
    straight = _dd("train", "--out", str(tmp_path / "straight"), *common)
    killed = _dd("train", "--out", str(tmp_path / "killed"), *common)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (ckpts / "ckpt-8.index").exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = _dd("train", "--out", str(tmp_path / "killed"))  # resume: the run dir alone
    for proc in (straight, resumed):
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output
    assert "started at 0" not in output  # it really resumed
    a = tf.train.load_checkpoint(str(tmp_path / "straight" / "checkpoints" / "ckpt-24"))
    b = tf.train.load_checkpoint(str(tmp_path / "killed" / "checkpoints" / "ckpt-24"))
    names = sorted(a.get_variable_to_shape_map())
    assert names == sorted(b.get_variable_to_shape_map())
    assert any("optimizer" in n for n in names) and any("dropout_rng" in n for n in names)
    # Step, optimizer iterations, dropout RNG state: identical. Weights and Adam slots:
    # equal up to float rounding (~1e-8: CPU reductions depend on memory alignment, so a
    # restored process rounds differently); a wrong data position, RNG state or lost
    # optimizer state shows as differences of 1e-3 and more.
    for name in names:
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH" or name.startswith("save_counter"):
            continue  # bookkeeping of tf.train.Checkpoint itself
        x, y = a.get_tensor(name), b.get_tensor(name)
        if x.dtype.kind in "iu" or "dropout_rng" in name or "iterations" in name:
            assert np.array_equal(x, y), name
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=name)


def test_tiny_model_learns_and_the_commands_chain(instances, tmp_path):
    """`--preset tiny` on the real corpus slice: MLM accuracy and loss move far from chance
    in 200 steps (~1.5 min on 2 cores) on training and unseen eval instances alike.

    (From scratch a model first learns the token frequencies -- loss ~10 -> ~6.5,
    accuracy 0 -> ~2-3% -- and needs thousands of steps to go further; the study's
    numbers come from continuing Google's checkpoint.)"""
    import keras

    from danmaku.pretrain.data import open_instances

    runner = CliRunner()
    run = tmp_path / "run"
    inst = open_instances(instances)
    keras.utils.set_random_seed(0)
    untrained = BertPretrainer.from_bert_config(BertConfig.preset("tiny"))
    before = {split: evaluate_split(untrained, inst.files(split), seq=128, pred=20, max_steps=20)
              for split in ("train", "eval")}
    result = runner.invoke(app, ["pretrain", "eval", str(CORPUS), "--instances", str(instances)])
    assert result.exit_code == 1 and _says(result, "holds no model")
    result = runner.invoke(app, ["pretrain", "train", "--instances", str(instances), "--out", str(run),
                                 "--preset", "tiny", "--steps", "200", "--log-every", "20"])
    assert result.exit_code == 0, result.output
    history = _scalars(run / "logs", "masked_lm_loss")
    assert len(history) == 10 and history[-1] < history[0] - 1.0, history

    report = tmp_path / "after.json"
    result = runner.invoke(app, ["pretrain", "eval", str(run), "--instances", str(instances),
                                 "--json", str(report), "--max-steps", "20"])
    assert result.exit_code == 0, result.output
    assert _says(result, "| run, train set |") and _says(result, "| run, eval set |")
    after = json.loads(report.read_text())["results"]
    for split in ("train", "eval"):
        assert after[split]["examples"] == 160
        assert before[split]["masked_lm_accuracy"] < 0.002  # chance: 1 / 21128
        assert after[split]["masked_lm_accuracy"] > 0.01
        assert after[split]["masked_lm_loss"] < before[split]["masked_lm_loss"] - 2.0

    for fmt in ("google", "hf"):
        result = runner.invoke(app, ["pretrain", "export", str(run), "--format", fmt, "--out",
                                     str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "google" / "model.ckpt-200.index").is_file()
    ours = google_weights(load_bert(run).pretrainer)
    # the finished run also holds Google's model.ckpt-200 (bert-as-service: -tuned_model_dir run/)
    beside = [run / "model.ckpt-200", (run, "model.ckpt-200"), tmp_path / "google", tmp_path / "hf"]
    for where in beside:
        loaded = load_bert(where[0], ckpt_name=where[1]) if isinstance(where, tuple) else load_bert(where)
        again = google_weights(loaded.pretrainer)
        assert all(np.array_equal(ours[k], again[k]) for k in ours), where

    # a run dir resumes only with its own settings
    result = runner.invoke(app, ["pretrain", "train", "--instances", str(instances), "--out", str(run),
                                 "--preset", "tiny", "--steps", "99"])
    assert result.exit_code == 1 and _says(result, "started with other settings")


def test_demo_recipe_options_reach_the_run(instances, tmp_path):
    """--initializer-range, --position-init, --nsp-weight and --zero-init-layers (the demo's recipe) are
    recorded and used; bad values say so."""
    runner = CliRunner()
    config = tmp_path / "bert_config.json"
    BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=128).to_json_file(config)
    common = ["pretrain", "train", "--instances", str(instances), "--bert-config", str(config),
              "--steps", "1", "--batch-size", "4"]
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--position-init", "learned"])
    assert result.exit_code == 1 and _says(result, "--position-init must be one of random, sinusoidal")
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--initializer-range", "0"])
    assert result.exit_code != 0 and _says(result, "--initializer-range must be positive, got 0")
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--nsp-weight", "-1"])
    assert result.exit_code == 1 and _says(result, "--nsp-weight must be >= 0, got -1")
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--zero-init-layers", "2"])
    assert result.exit_code == 1 and _says(result, "--zero-init-layers 2 is more than the model's 1 encoder")
    assert not (tmp_path / "bad").exists()
    run = tmp_path / "run"
    result = runner.invoke(app, [*common, "--out", str(run), "--position-init", "sinusoidal",
                                 "--initializer-range", "0.1", "--learning-rate", "1e-9",
                                 "--nsp-weight", "0", "--zero-init-layers", "1", "--decay-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["settings"]["position_init"] == "sinusoidal"
    assert manifest["settings"]["nsp_weight"] == 0
    assert manifest["settings"]["zero_init_layers"] == 1
    assert manifest["settings"]["decay_fraction"] == 0.25
    assert manifest["bert_config"]["initializer_range"] == 0.1
    weights = google_weights(load_bert(run).pretrainer)  # one step at lr 1e-9: still the start
    table = np.asarray(weights["bert/embeddings/position_embeddings"])
    assert table.std() == pytest.approx(0.1, rel=1e-3)
    assert np.corrcoef(table[:-1].ravel(), table[1:].ravel())[0, 1] > 0.9  # neighbours alike
    word = np.asarray(weights["bert/embeddings/word_embeddings"])
    assert word.std() == pytest.approx(0.088, rel=0.03)  # truncated normal(0.1): 0.88 x 0.1
    for kernel in ("attention/output/dense/kernel", "output/dense/kernel"):  # moved by ~lr from 0
        assert 0 < np.abs(weights[f"bert/encoder/layer_0/{kernel}"]).max() < 1e-7


def test_train_bad_inputs(instances, tmp_path):
    runner = CliRunner()
    bad_config = tmp_path / "bert_config.json"
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).to_json_file(bad_config)
    train = ["pretrain", "train", "--instances"]
    result = runner.invoke(app, [*train, str(instances), "--out", str(tmp_path / "a"),
                                 "--bert-config", str(bad_config)])
    assert result.exit_code == 1 and _says(result, "vocab/config mismatch")
    result = runner.invoke(app, [*train, str(tmp_path), "--out", str(tmp_path / "b"), "--preset", "tiny"])
    assert result.exit_code == 1 and _says(result, "not an instances directory")
    result = runner.invoke(app, [*train, str(instances), "--out", str(tmp_path / "c"),
                                 "--init-checkpoint", str(tmp_path / "nope" / "bert_model.ckpt"),
                                 "--bert-config", str(CORPUS.parent / "missing.json")])
    assert result.exit_code == 1 and _says(result, "not found")

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in instances.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = sorted(broken.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[50] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = runner.invoke(app, [*train, str(broken), "--out", str(tmp_path / "d"), "--preset", "tiny",
                                 "--steps", "3"])
    assert result.exit_code == 1 and _says(result, f"{shard.name} is corrupt"), result.output


def _scalars(logdir: Path, tag: str) -> list[float]:
    values = []
    for event_file in sorted(logdir.glob("events.*")):
        for raw in tf.data.TFRecordDataset(str(event_file)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    values.append(float(tf.make_ndarray(value.tensor)))
    return values


def _says(result, phrase: str) -> bool:
    """Whether the CLI output holds ``phrase`` (whitespace ignored: Rich wraps lines)."""
    return "".join(phrase.split()) in "".join(result.output.split())


_MIRRORED = """
import tests.conftest  # first, as under pytest: it loads triton before TensorFlow
from tests.pretrain.test_train import SMALL, _as_inputs, _batch
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys
import numpy as np
import danmaku.pretrain.train as T
from danmaku.pretrain.checkpoints import google_weights
weights = {}
for name in ("default", "mirrored"):
    T.make_strategy = lambda n, tpu=None, name=name: (
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if name == "mirrored"
        else tf.distribute.get_strategy())
    settings = T.TrainSettings(steps=10, batch_size=4, micro_batch_size=2 if name == "default" else 1,
                               learning_rate=1e-2, warmup_steps=0)
    trainer = T.Trainer(sys.argv[1] + name, SMALL, settings, T.RunOptions(), seq=24, pred=4)
    trainer.restore_or_init(sys.argv[2])
    assert trainer.replicas == (2 if name == "mirrored" else 1)
    data = tf.data.Dataset.from_tensors(_as_inputs(_batch())).repeat()
    iterator = iter(trainer.strategy.experimental_distribute_dataset(data))
    for _ in range(3):
        trainer.train_step(iterator)
    weights[name] = google_weights(trainer.model)
print(max(float(np.abs(weights["default"][k] - weights["mirrored"][k]).max()) for k in weights["default"]))
"""


def test_mirrored_strategy_equals_one_device(init_ckpt, tmp_path):
    """Two replicas (logical CPUs) x 2 micro-batches = one device x 2 micro-batches:
    the gradient is all-reduced before Google's global-norm clip."""
    env = os.environ | {"PYTHONPATH": PYTHONPATH, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path / "run-"), str(init_ckpt)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-4


@pytest.mark.parametrize("variant", [{"mixed_precision": "bf16"}, {"mixed_precision": "fp16"},
                                     {"optimizer": "lamb"}, {"xla": True}])
def test_precision_lamb_and_xla_variants_train(init_ckpt, tmp_path, variant):
    options = RunOptions(mixed_precision=variant.get("mixed_precision"), xla=variant.get("xla", False))
    settings = TrainSettings(steps=10, batch_size=B, micro_batch_size=2, learning_rate=1e-3, warmup_steps=0,
                             optimizer=variant.get("optimizer", "adamw"))
    trainer = Trainer(tmp_path, SMALL, settings, options, seq=S, pred=M)
    trainer.restore_or_init(str(init_ckpt))
    before = google_weights(trainer.model)
    iterator = iter(tf.data.Dataset.from_tensors(_as_inputs(_batch())).repeat())
    losses = [trainer.train_step(iterator)["loss"] for _ in range(4)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    after = google_weights(trainer.model)
    assert all(after[k].dtype == np.float32 for k in after)  # float32 master weights
    assert sum(not np.array_equal(before[k], after[k]) for k in after) > 0.9 * len(after)


def test_time_budget_pauses_and_resumes(instances, tmp_path):
    runner = CliRunner()
    config = tmp_path / "bert_config.json"
    BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=128).to_json_file(config)
    args = ["pretrain", "train", "--out", str(tmp_path / "run")]
    result = runner.invoke(app, [*args, "--instances", str(instances), "--bert-config", str(config),
                                 "--batch-size", "4", "--steps", "5", "--max-minutes", "0"])
    assert result.exit_code == 0 and _says(result, "paused (time budget) at step 1"), result.output
    assert (tmp_path / "run" / "checkpoints" / "ckpt-1.index").is_file()
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and _says(result, "finished at step 5 (started at 1)"), result.output
