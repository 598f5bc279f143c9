"""Benchmark: the hand-built TFRecord/Example writer vs ``tf.train.Example`` + ``tf.io.TFRecordWriter``.

Issue 11 asked to keep the hand-built serializer (``danmaku/pretrain/instances/
tfrecord.py``) only if it pays. Both sides write the same batches of instances
(BERT-base shapes: seq 128, 20 predictions, Google's Chinese vocabulary size)
to a file; the reference is what Google's ``create_pretraining_data.py`` does
per instance (build a ``tf.train.Example`` from Python lists, serialise, write).
Each is timed in this process over the same data, best of 3, one core.

    python bench/tfrecord.py [--instances 20000]

Prints one Markdown table (instances/s and the ratio).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tensorflow as tf  # noqa: E402

from danmaku.pretrain.instances import FEATURES, TFRecordWriter, serialize_batch  # noqa: E402
from tests.pretrain.test_tfrecord import random_batch  # noqa: E402


def ours(batch, path: Path) -> None:
    writer = TFRecordWriter(path)
    for start in range(0, len(batch.input_ids), 2048):
        part = type(batch)(*(getattr(batch, f)[start:start + 2048] for f in FEATURES))
        writer.write_many(serialize_batch(part))
    writer.close()


def reference(batch, path: Path) -> None:
    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    columns = {name: getattr(batch, name).tolist() for name in FEATURES}
    with tf.io.TFRecordWriter(str(path)) as writer:
        for k in range(len(batch.input_ids)):
            features = {name: ints(columns[name][k]) for name in FEATURES
                        if name not in ("masked_lm_weights", "next_sentence_labels")}
            features["masked_lm_weights"] = tf.train.Feature(
                float_list=tf.train.FloatList(value=columns["masked_lm_weights"][k]))
            features["next_sentence_labels"] = ints([columns["next_sentence_labels"][k]])
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def best_of(fn, batch, path: Path, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(batch, path)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20_000)
    args = parser.parse_args()
    batch = random_batch(args.instances, 128, 20, 21128, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        ours_s = best_of(ours, batch, Path(tmp) / "ours.tfrecord")
        ref_s = best_of(reference, batch, Path(tmp) / "ref.tfrecord")
        size = (Path(tmp) / "ours.tfrecord").stat().st_size
        ref_size = (Path(tmp) / "ref.tfrecord").stat().st_size
    n = args.instances
    print(f"{n:,} instances (seq 128, 20 predictions), best of 3, one process; "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, load {os.getloadavg()[0]:.1f}")
    print()
    print("| writer | seconds | instances/s | file bytes | ours / reference |")
    print("|---|---:|---:|---:|---:|")
    print(f"| tf.train.Example + tf.io.TFRecordWriter (reference) | {ref_s:.2f} | {n / ref_s:,.0f} | "
          f"{ref_size:,} | 1.00x |")
    print(f"| danmaku numpy serializer + TFRecord framing | {ours_s:.2f} | {n / ours_s:,.0f} | {size:,} | "
          f"{ref_s / ours_s:.1f}x |")


if __name__ == "__main__":
    main()
