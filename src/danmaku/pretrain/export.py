"""``danmaku pretrain export``: a trained model as a Google, HF or sentence-transformers folder, with a card.

* ``google``: ``model.ckpt-N.{index,data-00000-of-00001}`` + ``checkpoint`` +
  ``bert_config.json`` + ``vocab.txt`` -- what bert-as-service takes as
  ``-tuned_model_dir DIR -ckpt_name model.ckpt-N`` and what every
  Google-checkpoint converter reads. Optimizer slots are not exported (they are
  not needed to use the model; ``danmaku pretrain train`` resumes from its own run dir).
* ``hf``: ``config.json`` (``hidden_act: gelu_new``, Google's GELU) +
  ``model.safetensors`` (``BertForPreTraining``, heads included) + the tokenizer
  files (``tokenizer_files``): ``AutoTokenizer``/``AutoModel.from_pretrained(DIR)``
  need nothing else.
* ``sentence-transformers``: ``st_export`` -- ``SentenceTransformer(DIR)`` gives
  ``danmaku embed encode``'s vectors.

Every format also gets ``README.md``, the model card (``model_card``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint, write_hf
from danmaku.pretrain.loading import LoadedBert
from danmaku.pretrain.model_card import CardFacts, gather, write_card
from danmaku.pretrain.st_export import DEFAULT_MAX_SEQ_LENGTH, write_sentence_transformers

Format = Literal["google", "hf", "sentence-transformers"]
FORMATS = ("google", "hf", "sentence-transformers")


def export_model(bert: LoadedBert, out_dir: str | Path, *, fmt: Format = "google", step: int | None = None,
                 card: CardFacts | None = None, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> Path:
    """Write ``bert`` to ``out_dir`` in ``fmt`` with its model card; returns the checkpoint prefix
    (google) or the directory.

    ``card``: the facts from ``model_card.gather`` (provenance, metrics, meme score);
    without it the card states what ``bert`` itself tells (nothing is measured).
    ``max_seq_length`` is the sentence-transformers folder's (counting ``[CLS]``/``[SEP]``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    weights = google_weights(bert.pretrainer)
    if fmt == "hf":
        written = write_hf(weights, bert.config, bert.vocab_path, out_dir)
    elif fmt == "sentence-transformers":
        written = write_sentence_transformers(weights, bert.config, bert.vocab_path, out_dir,
                                              max_seq_length=max_seq_length)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        step = step if step is not None else (bert.step or 0)
        written = write_google_checkpoint(weights, out_dir / f"model.ckpt-{step}", global_step=step)
        bert.config.to_json_file(out_dir / "bert_config.json")
        if bert.vocab_path.resolve() != (out_dir / "vocab.txt").resolve():
            shutil.copyfile(bert.vocab_path, out_dir / "vocab.txt")
    if card is None:
        card = gather(bert, fmt=fmt, name=out_dir.resolve().name, measure=False,
                      max_seq_length=max_seq_length)
    if fmt == "google" and card.step is None:
        card.step = step
    write_card(out_dir, card)
    return written
