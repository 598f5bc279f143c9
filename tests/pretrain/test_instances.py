"""Pretraining instances against Google's ``create_pretraining_data.py`` on a real corpus slice.

``--google-exact`` must reproduce Google's instances for a seed exactly (same
tokens, masks, labels, order) and its TFRecords must hold the same Examples
Google's writer produces; the default sharded mode must follow the same
distribution (compared with Google's own output on the same corpus) and be
deterministic whatever the number of workers.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.pretrain.data import eval_dataset, find_corrupt_shard, open_instances
from danmaku.pretrain.instances import InstanceOptions, prepare
from tests.conftest import FIXTURES, SHARED_DATA
from tests.support.google_reference import create_pretraining_data, full_tokenizer

CORPUS = FIXTURES / "pretrain_corpus"
VOCAB = SHARED_DATA / "vocab.txt"
OPTS = InstanceOptions(dupe_factor=2, random_seed=4321)


def _records(directory: Path, split: str = "train") -> dict[str, np.ndarray]:
    """Every instance of a split, as arrays (in file order)."""
    inst = open_instances(directory)
    parts = [{**x, **y} for x, y in eval_dataset(inst.files(split), 4096, inst.max_seq_length,
                                                  inst.max_predictions)]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}


def _google(opts: InstanceOptions):
    """Google's own instances of the fixture corpus (its script's create_training_instances)."""
    cpd = create_pretraining_data()
    tokenizer = full_tokenizer(VOCAB)
    instances = cpd.create_training_instances(
        [str(CORPUS / "danmaku_text_pure.txt")], tokenizer, opts.max_seq_length, opts.dupe_factor,
        opts.short_seq_prob, opts.masked_lm_prob, opts.max_predictions_per_seq,
        random.Random(opts.random_seed))
    return instances, tokenizer


@pytest.fixture(scope="module")
def google_instances():
    return _google(OPTS)


@pytest.fixture(scope="module")
def exact_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exact")
    prepare(CORPUS, VOCAB, out, opts=OPTS, google_exact=True)
    return out


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    prepare(CORPUS, VOCAB, out, opts=OPTS, workers=2, shard_bytes=60_000)
    return out


def test_google_exact_reproduces_googles_instances(google_instances, exact_dir):
    instances, tokenizer = google_instances
    ours = _records(exact_dir)
    assert len(ours["token_ids"]) == len(instances)
    for k, inst in enumerate(instances):
        ids = tokenizer.convert_tokens_to_ids(inst.tokens)
        n, p = len(ids), len(inst.masked_lm_positions)
        assert ours["token_ids"][k, :n].tolist() == ids, k
        assert not ours["token_ids"][k, n:].any()
        assert ours["padding_mask"][k].sum() == n
        assert ours["segment_ids"][k, :n].tolist() == list(inst.segment_ids)
        assert ours["mask_positions"][k, :p].tolist() == list(inst.masked_lm_positions)
        assert ours["masked_lm_ids"][k, :p].tolist() == tokenizer.convert_tokens_to_ids(inst.masked_lm_labels)
        assert ours["masked_lm_weights"][k].tolist() == [1.0] * p + [0.0] * (OPTS.max_predictions_per_seq - p)
        assert ours["next_sentence_labels"][k] == int(inst.is_random_next)


def test_google_exact_writes_googles_bytes(google_instances, exact_dir, tmp_path):
    """Google's write_instance_to_example_files and ours: equal tf.train.Example records.

    (Not equal bytes: protobuf serialises the feature map in its hash order, an
    implementation detail of the protobuf runtime; parsers do not depend on it.)"""
    instances, tokenizer = google_instances
    cpd = create_pretraining_data()
    theirs = tmp_path / "google.tfrecord"
    cpd.write_instance_to_example_files(instances, tokenizer, OPTS.max_seq_length,
                                        OPTS.max_predictions_per_seq, [str(theirs)])
    google_records = [r.numpy() for r in tf.data.TFRecordDataset(str(theirs))]
    our_records = [r.numpy() for r in tf.data.TFRecordDataset(open_instances(exact_dir).files("train"))]
    assert len(our_records) == len(google_records)
    for ours, google in zip(our_records, google_records, strict=True):
        assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(google)


def _stats(rec: dict[str, np.ndarray], mask_id: int) -> dict[str, float]:
    lengths = rec["padding_mask"].sum(1)
    weights = rec["masked_lm_weights"] > 0
    rows, cols = np.nonzero(weights)
    shown = rec["token_ids"][rows, rec["mask_positions"][rows, cols]]
    labels = rec["masked_lm_ids"][rows, cols]
    return {
        "mean_length": lengths.mean(),
        "full_length": (lengths == 128).mean(),
        "short": (lengths < 64).mean(),
        "random_next": rec["next_sentence_labels"].mean(),
        "mask_token": (shown == mask_id).mean(),
        "kept": (shown == labels).mean(),
        "len_a": (rec["segment_ids"] == 0).sum(1).mean() - (128 - lengths).mean(),
        "instances_per_doc_pass": len(lengths),
    }


def test_sharded_mode_matches_googles_distribution(tmp_path):
    # Dupe factor 10 (Google's default): the ~10% of document passes with a short
    # target dominate the length statistics of this small corpus, so few passes
    # would make them noisy.
    opts = InstanceOptions(dupe_factor=10, random_seed=99)
    instances, tokenizer = _google(opts)
    mask_id = tokenizer.vocab["[MASK]"]
    prepare(CORPUS, VOCAB, tmp_path, opts=opts, workers=2, shard_bytes=60_000)
    g = _stats(_records_from_google(instances, tokenizer), mask_id)
    o = _stats(_records(tmp_path), mask_id)
    # same algorithm, different random stream and shard-local random documents
    assert o["instances_per_doc_pass"] == pytest.approx(g["instances_per_doc_pass"], rel=0.1)
    assert o["mean_length"] == pytest.approx(g["mean_length"], rel=0.05)
    assert o["full_length"] == pytest.approx(g["full_length"], abs=0.05)
    assert o["short"] == pytest.approx(g["short"], abs=0.05)
    assert o["random_next"] == pytest.approx(g["random_next"], abs=0.03)
    assert abs(o["random_next"] - 0.5) < 0.06
    assert o["len_a"] == pytest.approx(g["len_a"], rel=0.08)
    # 80% [MASK], 10% kept, 10% random (a random word equals the label 1/21128 of the time)
    assert o["mask_token"] == pytest.approx(0.8, abs=0.015)
    assert o["kept"] == pytest.approx(0.1, abs=0.01)


def test_sharded_mode_structure(sharded_dir):
    rec = _records(sharded_dir)
    vocab = open_instances(sharded_dir).vocab_path.read_text(encoding="utf-8").split("\n")
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    lengths = rec["padding_mask"].sum(1)
    # Google's count: min(max_pred, max(1, round(len * 0.15))) masked positions, always
    expected = np.minimum(20, np.maximum(1, np.round(lengths * 0.15)))
    assert (rec["masked_lm_weights"].sum(1) == expected).all()
    for k in range(0, len(lengths), 7):
        n = lengths[k]
        ids, seg = rec["token_ids"][k], rec["segment_ids"][k]
        seps = np.flatnonzero(ids[:n] == sep_id)
        assert ids[0] == cls_id and ids[n - 1] == sep_id and not ids[n:].any()
        len_a = int((seg[:n] == 0).sum()) - 2
        assert len_a >= 1 and n - len_a - 3 >= 1 and len_a + 1 in seps
        p = int(rec["masked_lm_weights"][k].sum())
        pos = rec["mask_positions"][k, :p]
        assert (np.diff(pos) > 0).all() and not rec["mask_positions"][k, p:].any()
        assert not np.isin(pos, [0, len_a + 1, n - 1]).any()  # never [CLS]/[SEP]
    assert lengths.max() <= 128


def test_sharded_mode_is_deterministic_and_resumable(sharded_dir, tmp_path):
    one = tmp_path / "one"
    summary = prepare(CORPUS, VOCAB, one, opts=OPTS, workers=1, shard_bytes=60_000)
    assert len(open_instances(one).files("train")) > 1  # really sharded
    a, b = _records(one), _records(sharded_dir)
    for key in a:
        assert np.array_equal(a[key], b[key]), key  # 1 worker == 2 workers
    # re-running keeps the finished shards and writes the same manifest
    manifest = (one / "instances.json").read_text()
    again = prepare(CORPUS, VOCAB, one, opts=OPTS, workers=1, shard_bytes=60_000)
    shards = open_instances(one)
    assert again.shards_reused == len(shards.files("train")) + len(shards.files("eval"))
    assert (one / "instances.json").read_text() == manifest
    assert again.splits["train"].instances == summary.splits["train"].instances
    with pytest.raises(ValueError, match="other options"):
        prepare(CORPUS, VOCAB, one, opts=InstanceOptions(dupe_factor=3), workers=1, shard_bytes=60_000)


def test_eval_split_and_manifest(sharded_dir):
    manifest = json.loads((sharded_dir / "instances.json").read_text())
    assert set(manifest["splits"]) == {"train", "eval"}
    assert manifest["vocab_size"] == 21128
    evals = _records(sharded_dir, "eval")
    assert len(evals["token_ids"]) == manifest["splits"]["eval"]["instances"] > 100
    # the real masked slots a training step scores, from the manifest and from the records
    trains = _records(sharded_dir, "train")
    real = trains["masked_lm_weights"].sum() / len(trains["token_ids"])
    assert open_instances(sharded_dir).mean_predictions("train") == pytest.approx(real, rel=1e-9)
    assert 1 < real < OPTS.max_predictions_per_seq


def test_bad_inputs(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "danmaku_text_pure.txt").write_text("\n\n  \n")
    result = runner.invoke(app, ["pretrain", "prepare", str(empty), "--vocab", str(VOCAB), "--out",
                                 str(tmp_path / "o1")])
    assert result.exit_code == 1 and _says(result, "no instances") and "Traceback" not in result.output
    result = runner.invoke(app, ["pretrain", "prepare", str(tmp_path / "nowhere"), "--vocab", str(VOCAB),
                                 "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and _says(result, "corpus not found")
    result = runner.invoke(app, ["pretrain", "prepare", str(empty), "--vocab", str(empty / "vocab.txt"),
                                 "--out", str(tmp_path / "o3")])
    assert result.exit_code == 1 and _says(result, "vocabulary not found")
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "danmaku_text_pure.txt").write_bytes("caf\xe9 ok\n".encode("latin-1"))
    result = runner.invoke(app, ["pretrain", "prepare", str(latin), "--vocab", str(VOCAB), "--out",
                                 str(tmp_path / "o4")])
    assert result.exit_code == 1 and _says(result, "not UTF-8")


def test_corrupt_shard_is_named(sharded_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sharded_dir, copy)
    files = open_instances(copy).files("train")
    data = Path(files[1]).read_bytes()
    Path(files[1]).write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    assert find_corrupt_shard(files) == files[1]


def _records_from_google(instances, tokenizer) -> dict[str, np.ndarray]:
    n = len(instances)
    out = {"token_ids": np.zeros((n, 128), np.int64), "padding_mask": np.zeros((n, 128), np.int64),
           "segment_ids": np.zeros((n, 128), np.int64), "mask_positions": np.zeros((n, 20), np.int64),
           "masked_lm_ids": np.zeros((n, 20), np.int64), "masked_lm_weights": np.zeros((n, 20)),
           "next_sentence_labels": np.zeros(n, np.int64)}
    for k, inst in enumerate(instances):
        ids = tokenizer.convert_tokens_to_ids(inst.tokens)
        p = len(inst.masked_lm_positions)
        out["token_ids"][k, :len(ids)] = ids
        out["padding_mask"][k, :len(ids)] = 1
        out["segment_ids"][k, :len(ids)] = inst.segment_ids
        out["mask_positions"][k, :p] = inst.masked_lm_positions
        out["masked_lm_ids"][k, :p] = tokenizer.convert_tokens_to_ids(inst.masked_lm_labels)
        out["masked_lm_weights"][k, :p] = 1
        out["next_sentence_labels"][k] = inst.is_random_next
    return out


def _says(result, phrase: str) -> bool:
    """Whether the CLI output holds ``phrase`` (whitespace ignored: Rich wraps lines)."""
    return "".join(phrase.split()) in "".join(result.output.split())
