"""Damaged checkpoints and instance shards: training falls back or fails fast, never mid-run.

Oracles: an uninterrupted run of the same settings (its checkpoint at the step a
resumed run reaches again), TensorFlow's own checkpoint reader and ``tf.data``
TFRecord reader for what a sound file is, and the bytes an undamaged ``prepare``
wrote. Every fault is a real file cut short or overwritten on disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.pretrain import instances as instances_module
from danmaku.pretrain.config import BertConfig
from danmaku.pretrain.data import open_instances
from danmaku.pretrain.instances import InstanceOptions, prepare
from danmaku.pretrain.recovery import candidates, damage, newest_intact
from danmaku.pretrain.tfrecord_check import CorruptShard, count_records, verify_shards
from danmaku.pretrain.train import RunError, RunOptions, TrainSettings, train
from tests.conftest import FIXTURES, SHARED_DATA

VOCAB = SHARED_DATA / "vocab.txt"
CORPUS = FIXTURES / "pretrain_corpus"
OPTS = InstanceOptions(dupe_factor=3)
DATA = "ckpt-8.data-00000-of-00001"


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("instances")
    prepare(CORPUS, VOCAB, out, opts=OPTS, workers=2, shard_bytes=60_000)
    return out


SETTINGS = TrainSettings(steps=8, batch_size=8, micro_batch_size=4, learning_rate=1e-3)
OPTIONS = RunOptions(save_every=4)


@pytest.fixture(scope="module")
def straight(instances, tmp_path_factory) -> Path:
    """An uninterrupted 8-step run with checkpoints at steps 4 and 8."""
    run = tmp_path_factory.mktemp("straight") / "run"
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    result = train(run, instances_dir=instances, config=config, settings=SETTINGS, options=OPTIONS)
    assert (result.resumed_from, result.step) == (0, 8)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-4.index", "ckpt-8.index"]
    return run


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _says(output: str, phrase: str) -> bool:
    """Whether ``phrase`` is in the output (whitespace ignored: Rich wraps lines)."""
    return "".join(phrase.split()) in "".join(output.split())


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------
def _assert_same_training_state(reference: Path, prefix: Path) -> None:
    """As test_train's kill/resume check: counters and RNG state equal, floats to rounding."""
    a, b = tf.train.load_checkpoint(str(reference)), tf.train.load_checkpoint(str(prefix))
    names = sorted(n for n in a.get_variable_to_shape_map()
                   if n != "_CHECKPOINTABLE_OBJECT_GRAPH" and not n.startswith("save_counter"))
    assert any("optimizer" in n for n in names) and any("dropout_rng" in n for n in names)
    assert names == sorted(n for n in b.get_variable_to_shape_map()
                           if n != "_CHECKPOINTABLE_OBJECT_GRAPH" and not n.startswith("save_counter"))
    for name in names:
        x, y = a.get_tensor(name), b.get_tensor(name)
        if x.dtype.kind in "iu" or "dropout_rng" in name or "iterations" in name:
            assert np.array_equal(x, y), name
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=name)


def test_truncated_newest_checkpoint_falls_back_to_the_previous(straight, tmp_path):
    """ckpt-8's data file cut in half: the run resumes from ckpt-4 with one warning line and
    reaches the uninterrupted run's ckpt-8 again."""
    run = _copy_run(straight, tmp_path / "run")
    _truncate(run / "checkpoints" / DATA)
    result = CliRunner().invoke(app, ["pretrain", "train", "--out", str(run)])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "damaged" in line]
    assert len(warning) == 1 and _says(result.output, (
        f"checkpoint ckpt-8 is damaged ({DATA} is truncated (shorter than ckpt-8.index says)); "
        "resuming from ckpt-4 instead"))
    assert _says(result.output, "finished at step 8 (started at 4)")
    _assert_same_training_state(straight / "checkpoints" / "ckpt-8", run / "checkpoints" / "ckpt-8")


def test_no_intact_checkpoint_is_one_clear_error(straight, tmp_path):
    run = _copy_run(straight, tmp_path / "run")
    _truncate(run / "checkpoints" / DATA, keep=0.1)
    (run / "checkpoints" / "ckpt-4.index").unlink()
    result = CliRunner().invoke(app, ["pretrain", "train", "--out", str(run)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _says(result.output, f"no intact checkpoint in {run / 'checkpoints'}")
    assert _says(result.output, f"{DATA} is truncated") and _says(result.output, "ckpt-4.index is missing")
    assert "Traceback" not in result.output


def test_what_is_wrong_with_a_checkpoint(straight, tmp_path):
    ckpts = _copy_run(straight, tmp_path / "run") / "checkpoints"
    assert candidates(ckpts) == [ckpts / "ckpt-8", ckpts / "ckpt-4"]
    assert damage(ckpts / "ckpt-8") is None and damage(ckpts / "ckpt-4") is None
    (ckpts / "checkpoint").unlink()  # the manager's state file: the files on disk still count
    assert newest_intact(ckpts) == ckpts / "ckpt-8"

    index = ckpts / "ckpt-8.index"
    good_index = index.read_bytes()
    _flip(index, len(good_index) // 2)  # a garbled index of the newest
    assert damage(ckpts / "ckpt-8").startswith("ckpt-8 does not read back: ")
    notices: list[str] = []
    assert newest_intact(ckpts, on_notice=notices.append) == ckpts / "ckpt-4"
    assert len(notices) == 1 and notices[0].startswith("checkpoint ckpt-8 is damaged (ckpt-8 does not")
    assert notices[0].endswith("; resuming from ckpt-4 instead")
    index.write_bytes(good_index)

    _flip(ckpts / DATA, (ckpts / DATA).stat().st_size // 2)  # one weight changed
    assert "Checksum does not match" in damage(ckpts / "ckpt-8")  # TensorFlow's CRC32C per tensor
    (ckpts / DATA).unlink()
    assert damage(ckpts / "ckpt-8") == "the data file ckpt-8.data-* is missing"
    (ckpts / "ckpt-4.index").write_bytes(b"")
    assert damage(ckpts / "ckpt-4").startswith("ckpt-4 does not read back: ")
    with pytest.raises(RunError, match="no intact checkpoint"):
        newest_intact(ckpts, [str(ckpts / "ckpt-4"), str(ckpts / "ckpt-8")])


# ---------------------------------------------------------------------------
# Instance shards
# ---------------------------------------------------------------------------
def test_shard_check_agrees_with_tf_data(instances, tmp_path):
    files = open_instances(instances).files("train")
    counts = [count_records(f) for f in files]
    assert counts == [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files]
    assert verify_shards(files, open_instances(instances).count("train")) == sum(counts)
    shard = tmp_path / "shard.tfrecord"
    data = Path(files[0]).read_bytes()
    cases = {
        "truncated mid-record": (data[:len(data) // 2], "ends inside a"),
        "truncated mid-header": (data + data[:5], "ends inside a record header"),
        "length changed": (bytes([data[0] ^ 1]) + data[1:], "bad length checksum"),
        "data changed": (data[:100] + bytes([data[100] ^ 1]) + data[101:], "bad data checksum"),
    }
    for case, (content, message) in cases.items():
        shard.write_bytes(content)
        with pytest.raises(CorruptShard, match=message):
            count_records(shard)
        if case == "truncated mid-header":  # tf.data stops there silently: a record lost unseen
            assert sum(1 for _ in tf.data.TFRecordDataset(str(shard))) == counts[0]
            continue
        with pytest.raises(tf.errors.OpError):  # tf.data agrees that the file is broken
            for _ in tf.data.TFRecordDataset(str(shard)):
                pass


def _boundary(data: bytes, records: int) -> int:
    """Byte offset just after the first ``records`` records."""
    at = 0
    for _ in range(records):
        at += 16 + int.from_bytes(data[at:at + 8], "little")
    return at


def test_train_checks_the_shards_before_step_1(instances, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(instances, broken)
    last = Path(open_instances(broken).files("train")[-1])
    data = last.read_bytes()
    last.write_bytes(data[:_boundary(data, 10)])  # whole records: only the count tells
    config = BertConfig.preset("tiny")
    settings = TrainSettings(steps=2, batch_size=4)
    begun: list[int] = []
    with pytest.raises(CorruptShard, match="manifest says"):
        train(tmp_path / "a", instances_dir=broken, config=config, settings=settings,
              on_begin=lambda start, total: begun.append(start))

    last.write_bytes(data[:len(data) - 100])  # cut inside the last record
    result = CliRunner().invoke(app, ["pretrain", "train", "--instances", str(broken), "--out",
                                      str(tmp_path / "b"), "--preset", "tiny", "--steps", "2",
                                      "--batch-size", "4"])
    assert result.exit_code == 1, result.output
    assert _says(result.output, f"error: instance shard {last} is corrupt at byte")
    assert _says(result.output, "run `danmaku pretrain prepare` again with the same arguments")
    assert "Traceback" not in result.output
    assert begun == [] and not (tmp_path / "a" / "checkpoints").exists()
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_prepare_rebuilds_a_damaged_finished_shard(instances, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(instances, copy)
    files = [Path(f) for f in open_instances(copy).files("train")]
    original = files[1].read_bytes()
    _truncate(files[1], keep=0.7)
    summary = prepare(CORPUS, VOCAB, copy, opts=OPTS, workers=1, shard_bytes=60_000)
    assert summary.shards_rebuilt == [files[1].name]
    assert files[1].read_bytes() == original  # the very shard an undamaged run wrote
    assert summary.shards_reused == len(list(copy.glob("*.tfrecord"))) - 1

    (copy / f"{files[0].name}.json").write_text('{"file": "trunc')  # its marker cut short
    result = CliRunner().invoke(app, ["pretrain", "prepare", str(CORPUS), "--vocab", str(VOCAB), "--out",
                                      str(copy), "--dupe-factor", "3", "--shard-mb", str(60_000 / (1 << 20)),
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert _says(result.output, f"1 damaged shard(s) rebuilt: {files[0].name}")
    assert [Path(f).read_bytes() for f in open_instances(copy).files("train")] == [
        Path(f).read_bytes() for f in open_instances(instances).files("train")]


def test_prepare_verifies_what_it_wrote(tmp_path, monkeypatch):
    """A write that lost its tail (a failing disk) fails prepare in one line, before the manifest."""
    close = instances_module.TFRecordWriter.close

    def close_and_lose_the_tail(self) -> None:
        close(self)
        _truncate(self.path, keep=0.9)

    monkeypatch.setattr(instances_module.TFRecordWriter, "close", close_and_lose_the_tail)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["pretrain", "prepare", str(CORPUS), "--vocab", str(VOCAB), "--out",
                                      str(out), "--google-exact", "--dupe-factor", "1"])
    assert result.exit_code == 1, result.output
    assert _says(result.output, f"error: instance shard {out / 'train-00000.tfrecord'} is corrupt at byte")
    assert _says(result.output, "right after it was written")
    assert "Traceback" not in result.output
    assert not (out / "instances.json").exists()
