"""tf.data input pipeline over the instance shards of ``danmaku pretrain prepare``.

Reading, shuffling, batching and parsing (``tf.io.parse_example`` on whole
batches) are TensorFlow ops: no Python runs per example. The training stream
is deterministic for a seed -- shard order, interleaving and the shuffle buffer
are seeded -- so a resumed run skips exactly the records it has already
consumed (``skip_records``) and sees the very batches an uninterrupted run
would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from danmaku.artifacts import InstancesManifest
from danmaku.pretrain.instances import FORMAT

MODEL_INPUTS = {"input_ids": "token_ids", "segment_ids": "segment_ids", "input_mask": "padding_mask",
                "masked_lm_positions": "mask_positions"}
LABELS = ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


@dataclass(frozen=True)
class InstanceSet:
    """One prepared directory: its manifest, vocabulary and shard files per split."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def max_seq_length(self) -> int:
        return int(self.manifest["options"]["max_seq_length"])

    @property
    def max_predictions(self) -> int:
        return int(self.manifest["options"]["max_predictions_per_seq"])

    def mean_predictions(self, split: str = "train") -> float:
        """Real masked slots per instance (``masked / instances``): what a training step scores."""
        info = self.manifest["splits"][split]
        if not info.get("instances") or "masked" not in info:
            return float(self.max_predictions)
        return info["masked"] / info["instances"]

    @property
    def vocab_path(self) -> Path:
        return self.directory / "vocab.txt"

    def has(self, split: str) -> bool:
        return split in self.manifest.get("splits", {})

    def files(self, split: str) -> list[str]:
        if not self.has(split):
            raise ValueError(f"{self.directory} has no {split!r} instances "
                             f"(splits: {', '.join(self.manifest.get('splits', {})) or 'none'})")
        names = self.manifest["splits"][split]["files"]
        paths = [self.directory / n for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"instance shard(s) missing: {', '.join(missing[:3])}")
        return [str(p) for p in paths]

    def count(self, split: str) -> int:
        return int(self.manifest["splits"][split]["instances"])


def open_instances(directory: str | Path) -> InstanceSet:
    """Read and check ``instances.json`` of a ``danmaku pretrain prepare`` output."""
    directory = Path(directory)
    if not InstancesManifest.exists(directory):
        raise FileNotFoundError(f"{directory} is not an instances directory (no {InstancesManifest.NAME}); "
                                "run `danmaku pretrain prepare` first")
    manifest = InstancesManifest.read(directory)
    if manifest is None or "splits" not in manifest:
        raise ValueError(f"{InstancesManifest.path(directory)} is not a finished {FORMAT} manifest "
                         "(corrupt, or prepare did not finish); re-run `danmaku pretrain prepare`")
    return InstanceSet(directory, manifest)


def feature_spec(seq: int, pred: int) -> dict[str, tf.io.FixedLenFeature]:
    """Google's ``run_pretraining.input_fn_builder`` name_to_features."""
    return {
        "input_ids": tf.io.FixedLenFeature([seq], tf.int64),
        "input_mask": tf.io.FixedLenFeature([seq], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([seq], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([pred], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([pred], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([pred], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


def parser(seq: int, pred: int):
    """Batch of serialized Examples -> (model inputs, labels), int32 like Google's TPU input."""
    spec = feature_spec(seq, pred)

    def parse(serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        ex = tf.io.parse_example(serialized, spec)
        inputs = {ours: tf.cast(ex[google], tf.int32) for google, ours in MODEL_INPUTS.items()}
        labels = {
            "masked_lm_ids": tf.cast(ex["masked_lm_ids"], tf.int32),
            "masked_lm_weights": ex["masked_lm_weights"],
            "next_sentence_labels": tf.cast(tf.reshape(ex["next_sentence_labels"], [-1]), tf.int32),
        }
        return inputs, labels

    return parse


def train_dataset(files: list[str], batch_size: int, seq: int, pred: int, *, seed: int,
                  skip_records: int = 0, shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """Endless, seeded, shuffled batches; ``skip_records`` resumes mid-stream."""
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    if skip_records:
        ds = ds.skip(skip_records)  # raw records: nothing is parsed while skipping
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(parser(seq, pred), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(files: list[str], batch_size: int, seq: int, pred: int,
                 max_steps: int | None = None) -> tf.data.Dataset:
    """Batches in file order, like Google's eval input (no shuffle, no repeat)."""
    ds = tf.data.TFRecordDataset(sorted(files))
    ds = ds.batch(batch_size, drop_remainder=False)
    if max_steps:
        ds = ds.take(max_steps)
    return ds.map(parser(seq, pred), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def find_corrupt_shard(files: list[str]) -> str | None:
    """The first shard whose records do not read back (bad length/CRC or truncation)."""
    for name in files:
        try:
            for _ in tf.data.TFRecordDataset(name).batch(4096):
                pass
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            return name
    return None
