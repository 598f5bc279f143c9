"""Pretraining instances: Google's ``create_pretraining_data`` algorithm, sharded and streaming.

Input is Google's format (one sentence -- here one danmaku -- per line, a blank
line between documents); output is TFRecord shards of ``tf.train.Example`` in
Google's feature layout (``input_ids``, ``input_mask``, ``segment_ids``,
``masked_lm_positions``, ``masked_lm_ids``, ``masked_lm_weights``,
``next_sentence_labels``), so Google's ``run_pretraining.py`` could read them and
``pretrain/data.py`` reads them with tf.data alone.

The algorithm is Google's, step for step: per document (dupe_factor times),
pack sentences up to a target length (10% of documents get a random shorter
target), split the chunk into A and B, replace B by a random span of another
document half the time (putting the unused sentences back), trim the longer of
A/B at a random end, then mask 15% of the tokens (at most 20) with 80% [MASK],
10% kept, 10% a random vocabulary word.

Two modes:

* ``google_exact=True`` reproduces Google's script for a seed exactly (the same
  ``tf.train.Example`` records in the same order): one
  Python ``random.Random`` consumed in Google's order, the whole corpus in
  memory, one output file in Google's instance order.
* default: the corpus is cut into shards of whole documents, each worker
  process handles a shard with its own seed (``SeedSequence([seed, split,
  shard])``), random-next documents are drawn from the same shard, and the
  masking and serialisation are vectorised with numpy over batches of
  instances. Memory stays flat: the main process only reads lines ahead by a
  bounded number of shards. Same distribution, different random stream.

Both share the span arithmetic of Google's ``create_instances_from_document``:
a document is a list of sentence offsets into one flat token array, so A and B
are ``[lo, hi)`` ranges and no token lists are built until the batch is
written.

Modules, in the order a line passes them: ``options``, ``documents`` (reading
and tokenising), ``algorithm`` (Google's instance building on spans),
``masking`` (vectorised masking), ``tfrecord`` (the bytes), ``shards`` (one
worker's shard), ``exact`` (``--google-exact``), ``prepare`` (the driver).
"""

from danmaku.pretrain.instances.masking import Batch
from danmaku.pretrain.instances.options import FEATURES, FORMAT, InstanceOptions
from danmaku.pretrain.instances.prepare import PrepareSummary, corpus_files, prepare
from danmaku.pretrain.instances.shards import ShardStats
from danmaku.pretrain.instances.tfrecord import TFRecordWriter, serialize_batch

__all__ = ["FEATURES", "FORMAT", "Batch", "InstanceOptions", "PrepareSummary", "ShardStats",
           "TFRecordWriter", "corpus_files", "prepare", "serialize_batch"]
