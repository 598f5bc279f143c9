"""The hand-built ``tf.train.Example`` bytes and TFRecord framing against TensorFlow's own.

TensorFlow reads our shards back (framing and CRCs checked by ``TFRecordDataset``)
and every feature of every record equals the ``tf.train.Example`` that
TensorFlow builds from the same arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from danmaku.pretrain.instances import FEATURES, Batch, TFRecordWriter, serialize_batch


def random_batch(n: int, seq: int, pred: int, vocab: int, seed: int) -> Batch:
    gen = np.random.default_rng(seed)
    lengths = gen.integers(5, seq + 1, n)
    mask = (np.arange(seq) < lengths[:, None]).astype(np.uint8)
    ids = (gen.integers(0, vocab, (n, seq)) * mask).astype(np.int32)
    segments = ((np.arange(seq) > lengths[:, None] // 2) * mask).astype(np.uint8)
    masked = gen.integers(1, pred + 1, n)
    weights = (np.arange(pred) < masked[:, None]).astype(np.float32)
    positions = (gen.integers(1, seq, (n, pred)) * weights).astype(np.int32)
    labels = (gen.integers(0, vocab, (n, pred)) * weights).astype(np.int32)
    return Batch(ids, mask, segments, positions, labels, weights, gen.integers(0, 2, n).astype(np.uint8))


def tf_example(batch: Batch, k: int) -> tf.train.Example:
    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    features = {name: ints(np.atleast_1d(getattr(batch, name)[k])) for name in FEATURES
                if name != "masked_lm_weights"}
    features["masked_lm_weights"] = tf.train.Feature(
        float_list=tf.train.FloatList(value=batch.masked_lm_weights[k].tolist()))
    return tf.train.Example(features=tf.train.Features(feature=features))


@pytest.mark.parametrize(("seq", "pred", "vocab"), [(128, 20, 21128), (16, 3, 100), (512, 80, 300_000)])
def test_records_equal_tensorflows_examples(tmp_path, seq, pred, vocab):
    batch = random_batch(64, seq, pred, vocab, seed=seq)
    path = tmp_path / "shard.tfrecord"
    writer = TFRecordWriter(path)
    writer.write_many(serialize_batch(batch))
    writer.close()
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 64
    for k, record in enumerate(records):
        assert tf.train.Example.FromString(record) == tf_example(batch, k)


def test_a_damaged_record_fails_tensorflows_crc_check(tmp_path):
    path = tmp_path / "shard.tfrecord"
    writer = TFRecordWriter(path)
    writer.write_many(serialize_batch(random_batch(4, 16, 3, 100, seed=1)))
    writer.close()
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
