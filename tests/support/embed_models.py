"""Tiny random BERTs on disk for the ``danmaku embed`` tests, written through ``pretrain``'s API.

Real Chinese vocabulary (``shared/data/vocab.txt``) so that the meme phrases
tokenize as they would for the real model; everything else is small: 2 layers
of width 32. Written in Google's format (``bert_config.json``, ``vocab.txt``,
``bert_model.ckpt``), the way the study's model directory looks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import SHARED_DATA

VOCAB = SHARED_DATA / "vocab.txt"
VOCAB_SIZE = 21128


def tiny_config(**changes):
    from danmaku.pretrain.config import BertConfig

    shape = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    shape.update(changes)
    return BertConfig(**shape)


def write_google_model(out: Path, *, seed: int = 0, config=None, weights=None) -> Path:
    """A Google-format model dir; random weights (``seed``) unless ``weights`` are given."""
    import keras

    from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint
    from danmaku.pretrain.model import BertPretrainer

    config = config or tiny_config()
    if weights is None:
        keras.utils.set_random_seed(seed)
        weights = google_weights(BertPretrainer.from_bert_config(config))
    out.mkdir(parents=True, exist_ok=True)
    config.to_json_file(out / "bert_config.json")
    shutil.copyfile(VOCAB, out / "vocab.txt")
    write_google_checkpoint(weights, out / "bert_model.ckpt")
    return out
