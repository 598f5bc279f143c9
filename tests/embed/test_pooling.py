"""Pooling, layer indices and the streaming .npy writer, on hand-checked arrays."""

from __future__ import annotations

import numpy as np
import pytest

from danmaku.embed.npy_stream import NpyAppender
from danmaku.embed.pooling import Pooling, pool, resolve_layers

# two sentences: 3 real tokens + 1 padding token, and 2 real + 2 padding; hidden 2
X = np.array(
    [
        [[1, 8], [3, 2], [5, 5], [99, 99]],
        [[2, -4], [4, 0], [-7, 7], [50, 50]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Pooling.REDUCE_MEAN, [[3, 5], [3, -2]]),
        (Pooling.REDUCE_MAX, [[5, 8], [4, 0]]),
        (Pooling.REDUCE_MEAN_MAX, [[3, 5, 5, 8], [3, -2, 4, 0]]),
        (Pooling.CLS_TOKEN, [[1, 8], [2, -4]]),
        (Pooling.FIRST_TOKEN, [[1, 8], [2, -4]]),
        (Pooling.LAST_TOKEN, [[5, 5], [4, 0]]),
        (Pooling.SEP_TOKEN, [[5, 5], [4, 0]]),
    ],
)
def test_sentence_poolings_by_hand(strategy, expected):
    np.testing.assert_allclose(pool(X, MASK, strategy), expected, rtol=1e-6)
    assert strategy.width(2) == len(expected[0])


def test_none_zeroes_padding_and_pads_to_max_seq_len():
    out = pool(X, MASK, Pooling.NONE, max_seq_len=6)
    assert out.shape == (2, 6, 2)
    np.testing.assert_array_equal(out[0, :3], X[0, :3])
    np.testing.assert_array_equal(out[1, :2], X[1, :2])
    assert not out[0, 3:].any() and not out[1, 2:].any()


def test_layer_indices_are_bert_as_services():
    assert resolve_layers([-1], 12) == [11]
    assert resolve_layers([-4, -3, -2, -1], 12) == [8, 9, 10, 11]
    assert resolve_layers([0, -12], 12) == [0, 0]
    for bad in ([-13], [12], []):
        with pytest.raises(ValueError):
            resolve_layers(bad, 12)


def test_npy_appender_grows_valid_and_resumes(tmp_path):
    path = tmp_path / "v.npy"
    with NpyAppender(path, (3,)) as out:
        out.append(np.ones((2, 3)))
        assert np.load(path).shape == (2, 3)  # valid after every block
        out.append(np.full((1, 3), 2.0))
    with open(path, "ab") as handle:  # a block whose header update never happened (killed)
        handle.write(b"\0" * 7)
    with NpyAppender(path, (3,), resume=True) as out:
        assert out.rows == 3
        out.append(np.full((1, 3), 3.0))
    np.testing.assert_array_equal(np.load(path), [[1, 1, 1], [1, 1, 1], [2, 2, 2], [3, 3, 3]])
    with pytest.raises(ValueError, match="rows of shape"):
        NpyAppender(path, (4,), resume=True)
    np.save(tmp_path / "numpy.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="not written by danmaku embed encode"):
        NpyAppender(tmp_path / "numpy.npy", (3,), resume=True)


def test_batches_are_length_sorted_capped_and_keep_padding_low():
    from danmaku.embed.encoder import plan_batches

    lengths = [5, 3, 16, 4, 4, 3, 6, 5, 11, 4]
    batches = plan_batches(lengths, batch_size=4)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each text exactly once
    assert [[lengths[i] for i in b] for b in batches] == [[3, 3, 4, 4], [4, 5, 5, 6], [11, 16]]
    # 2 x 16 slots for 27 real tokens is within 25 % padding; 3 + 16 would not be
    assert [b.tolist() for b in plan_batches([3, 16], batch_size=4)] == [[0], [1]]
    assert [len(b) for b in plan_batches([7] * 10, batch_size=4)] == [4, 4, 2]
    assert plan_batches([], batch_size=4) == []
