"""``pretrain export --format sentence-transformers``: a folder ``SentenceTransformer(DIR)`` loads.

It gives the vectors ``danmaku embed encode`` gives with its defaults
(REDUCE_MEAN of the last layer, ``max_seq_len`` 32), because the pieces line up:

* module 0, ``Transformer``: the HF ``BertModel`` at the folder root (weights,
  ``config.json``, tokenizer files) with ``max_seq_length`` = ``max_seq_len``;
  its tokenizer frames ``[CLS] .. [SEP]`` and truncates the word pieces to
  ``max_seq_length - 2``, as ``Encoder.frame`` does;
* module 1, ``Pooling`` with ``pooling_mode_mean_tokens``: the mean over the
  attention mask, which is 1 on ``[CLS]`` and ``[SEP]`` too -- exactly
  bert-as-service's REDUCE_MEAN (``embed/pooling.py``), which averages over the
  input mask including both;
* no ``Normalize`` module: ``embed encode`` does not normalise either.

The files are sentence-transformers' long-standing layout (``modules.json``
with ``sentence_transformers.models.*`` types, ``1_Pooling/config.json`` with
``pooling_mode_*`` flags, ``sentence_bert_config.json``), which every version
since 2.x reads and which text-embeddings-inference and infinity read too;
nothing here imports sentence-transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from danmaku.pretrain.checkpoints import write_hf
from danmaku.pretrain.config import BertConfig

DEFAULT_MAX_SEQ_LENGTH = 32  # danmaku embed encode's --max-seq-len default
POOLING_DIR = "1_Pooling"


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_sentence_transformers(weights: Mapping[str, np.ndarray], config: BertConfig, vocab_path: str | Path,
                                out_dir: str | Path, *, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
                                do_lower_case: bool = True) -> Path:
    """Write the folder; ``max_seq_length`` counts ``[CLS]`` and ``[SEP]``, like ``--max-seq-len``."""
    if not 2 <= max_seq_length <= config.max_position_embeddings:
        raise ValueError(f"max_seq_length must be between 2 and {config.max_position_embeddings} (the "
                         f"model's positions), got {max_seq_length}")
    out_dir = Path(out_dir)
    write_hf(weights, config, vocab_path, out_dir, bare=True, do_lower_case=do_lower_case,
             model_max_length=max_seq_length)
    _write_json(out_dir / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ])
    # do_lower_case here would lowercase before the tokenizer; the tokenizer already does it
    _write_json(out_dir / "sentence_bert_config.json",
                {"max_seq_length": max_seq_length, "do_lower_case": False})
    (out_dir / POOLING_DIR).mkdir(exist_ok=True)
    _write_json(out_dir / POOLING_DIR / "config.json", {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    _write_json(out_dir / "config_sentence_transformers.json",
                {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    return out_dir
