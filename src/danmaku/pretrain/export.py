"""``danmaku pretrain export``: a trained model as a Google or HF model directory.

* ``google``: ``model.ckpt-N.{index,data-00000-of-00001}`` + ``checkpoint`` +
  ``bert_config.json`` + ``vocab.txt`` -- what bert-as-service takes as
  ``-tuned_model_dir DIR -ckpt_name model.ckpt-N`` and what every
  Google-checkpoint converter reads. Optimizer slots are not exported (they are
  not needed to use the model; ``danmaku pretrain train`` resumes from its own run dir).
* ``hf``: ``config.json`` (``hidden_act: gelu_new``, Google's GELU) +
  ``model.safetensors`` + ``vocab.txt``, for ``BertForPreTraining.from_pretrained``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint, write_hf
from danmaku.pretrain.loading import LoadedBert

Format = Literal["google", "hf"]
FORMATS = ("google", "hf")


def export_model(bert: LoadedBert, out_dir: str | Path, *, fmt: Format = "google",
                 step: int | None = None) -> Path:
    """Write ``bert`` to ``out_dir`` in ``fmt``; returns the checkpoint prefix or the directory."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    weights = google_weights(bert.pretrainer)
    if fmt == "hf":
        return write_hf(weights, bert.config, bert.vocab_path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = step if step is not None else (bert.step or 0)
    prefix = write_google_checkpoint(weights, out_dir / f"model.ckpt-{step}", global_step=step)
    bert.config.to_json_file(out_dir / "bert_config.json")
    if bert.vocab_path.resolve() != (out_dir / "vocab.txt").resolve():
        shutil.copyfile(bert.vocab_path, out_dir / "vocab.txt")
    return prefix
