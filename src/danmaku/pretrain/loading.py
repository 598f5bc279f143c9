"""``load_bert``: one entry point for every BERT the project meets.

``danmaku embed`` and ``danmaku pretrain eval`` accept any of these as MODEL:

* a Google model directory (``bert_config.json``, ``vocab.txt``,
  ``bert_model.ckpt.*``), optionally with a tuned checkpoint elsewhere --
  bert-as-service's ``-model_dir`` + ``-tuned_model_dir`` + ``-ckpt_name``
  (config and vocab from the model dir, weights from the tuned dir);
* a ``danmaku pretrain export`` directory, Google (``model.ckpt-N``) or HF
  (``config.json`` + ``model.safetensors``) format;
* a ``danmaku pretrain train`` run directory (``run.json``): its newest checkpoint
  (``checkpoints/ckpt-N``), or with ``ckpt_name="model.ckpt-N"`` the Google
  checkpoint a finished run writes beside ``bert_config.json``;
* a checkpoint prefix itself (``.../model.ckpt-12000``), config and vocab
  beside it.

Every failure (missing path, missing variables, vocab and config that do not
agree) is a ``ValueError``/``FileNotFoundError`` whose message names the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danmaku.artifacts import GOOGLE_CONFIG, RUN_CHECKPOINTS, RUN_MANIFEST, VOCAB
from danmaku.pretrain.checkpoints import (
    assign_google_weights,
    checkpoint_exists,
    newest_checkpoint,
    read_google_checkpoint,
    read_hf,
)
from danmaku.pretrain.config import BertConfig


@dataclass
class LoadedBert:
    """A BERT ready to run.

    Attributes:
        config: its architecture.
        vocab_path: the ``vocab.txt`` that goes with it (for ``danmaku.text.tokenizer.BertTokenizer``).
        pretrainer: ``danmaku.pretrain.model.BertPretrainer`` with the weights loaded.
        backbone: ``pretrainer.backbone``, a keras-hub ``BertBackbone`` (for embeddings).
        heads_loaded: whether the MLM/NSP heads came from the checkpoint (else random).
        source: human-readable description of what was loaded from where.
        step: training step of the checkpoint when known.
    """

    config: BertConfig
    vocab_path: Path
    pretrainer: Any
    heads_loaded: bool
    source: str
    step: int | None = None

    @property
    def backbone(self) -> Any:
        return self.pretrainer.backbone


def vocab_size_of(vocab_path: Path) -> int:
    with open(vocab_path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def check_vocab(config: BertConfig, vocab_path: Path) -> None:
    if not vocab_path.is_file():
        raise FileNotFoundError(f"vocabulary not found: {vocab_path}")
    lines = vocab_size_of(vocab_path)
    if lines != config.vocab_size:
        raise ValueError(
            f"vocab/config mismatch: {vocab_path} has {lines} tokens but the config says "
            f"vocab_size={config.vocab_size}"
        )


def load_bert(model: str | Path, *, ckpt_name: str | None = None, tuned_dir: str | Path | None = None,
              dtype: Any = None) -> LoadedBert:
    """Load a BERT from a Google dir, an export dir, a run dir or a checkpoint prefix.

    Args:
        model: the directory (or checkpoint prefix) to load; see the module docstring.
        ckpt_name: which checkpoint: a prefix name such as ``model.ckpt-12000``
            (Google) or ``ckpt-3`` (run dir), looked up in ``tuned_dir`` if given,
            else in ``model``. Default: ``bert_model.ckpt`` in a Google dir, else
            the newest checkpoint.
        tuned_dir: a directory holding the weights (bert-as-service's
            ``tuned_model_dir``): a Google-format export or a run dir.
            Config and vocabulary still come from ``model``.
        dtype: Keras dtype policy for the model (e.g. ``"mixed_bfloat16"``).

    Example:
        >>> bert = load_bert("chinese_L-12_H-768_A-12", tuned_dir="run", ckpt_name="model.ckpt-12000")
        >>> bert.backbone(inputs)["sequence_output"]
    """
    path = Path(model)
    if not path.exists() and checkpoint_exists(path):
        return _load_google(path.parent, path, dtype=dtype)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is a file; give a model directory or a checkpoint prefix")
    weights_dir = Path(tuned_dir) if tuned_dir is not None else path
    if tuned_dir is not None and not weights_dir.is_dir():
        raise FileNotFoundError(f"tuned model directory not found: {weights_dir}")

    if (weights_dir / RUN_MANIFEST).is_file() and not (
            ckpt_name is not None and checkpoint_exists(weights_dir / ckpt_name)):
        return _load_run(path, weights_dir, ckpt_name, dtype=dtype)
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")) and tuned_dir is None:
        return _load_hf(path, dtype=dtype)
    if ckpt_name is not None:
        prefix = weights_dir / ckpt_name
        if not checkpoint_exists(prefix):
            raise FileNotFoundError(f"checkpoint {ckpt_name!r} not found in {weights_dir} "
                                    f"({prefix}.index is missing)")
    else:
        prefix = weights_dir / "bert_model.ckpt"
        if not checkpoint_exists(prefix):
            found = newest_checkpoint(weights_dir)
            if found is None:
                raise FileNotFoundError(
                    f"{weights_dir} holds no model: expected a Google dir (bert_config.json, vocab.txt, "
                    "*.ckpt*.index), an HF dir (config.json, *.safetensors) or a danmaku run dir (run.json)"
                )
            prefix = found
    return _load_google(path, prefix, dtype=dtype)


def _config_and_vocab(model_dir: Path) -> tuple[BertConfig, Path]:
    config_path = model_dir / GOOGLE_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} has no {GOOGLE_CONFIG}")
    config = BertConfig.from_json_file(config_path)
    vocab = model_dir / VOCAB
    check_vocab(config, vocab)
    return config, vocab


def _new_pretrainer(config: BertConfig, dtype: Any):
    from danmaku.pretrain.model import BertPretrainer

    return BertPretrainer.from_bert_config(config, dtype=dtype)


def _load_google(model_dir: Path, prefix: Path, *, dtype: Any) -> LoadedBert:
    from danmaku.pretrain.checkpoints import checkpoint_global_step

    config, vocab = _config_and_vocab(model_dir)
    if _is_object_checkpoint(prefix):
        raise ValueError(f"{prefix} is a danmaku training checkpoint; load its run directory instead")
    pretrainer = _new_pretrainer(config, dtype)
    weights = read_google_checkpoint(prefix)
    missing = assign_google_weights(pretrainer, weights, source=f"checkpoint {prefix}")
    return LoadedBert(
        config=config, vocab_path=vocab, pretrainer=pretrainer, heads_loaded=not missing,
        source=f"Google checkpoint {prefix} (config {model_dir / GOOGLE_CONFIG})",
        step=checkpoint_global_step(prefix),
    )


def _load_hf(model_dir: Path, *, dtype: Any) -> LoadedBert:
    config, weights = read_hf(model_dir)
    vocab = model_dir / VOCAB
    check_vocab(config, vocab)
    pretrainer = _new_pretrainer(config, dtype)
    missing = assign_google_weights(pretrainer, weights, source=f"HF model {model_dir}")
    return LoadedBert(config=config, vocab_path=vocab, pretrainer=pretrainer, heads_loaded=not missing,
                      source=f"HF safetensors {model_dir}")


def _is_object_checkpoint(prefix: Path) -> bool:
    import tensorflow as tf

    try:
        return tf.train.load_checkpoint(str(prefix)).has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {prefix}: {err}") from err


def run_checkpoint(run_dir: Path, ckpt_name: str | None = None) -> Path:
    """The checkpoint prefix of a run dir: ``ckpt_name`` or the newest."""
    import tensorflow as tf

    ckpt_dir = run_dir / RUN_CHECKPOINTS
    if ckpt_name is not None:
        prefix = ckpt_dir / ckpt_name
        if not checkpoint_exists(prefix):
            raise FileNotFoundError(f"checkpoint {ckpt_name!r} not found in {ckpt_dir}")
        return prefix
    latest = tf.train.latest_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if latest is None:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint yet (nothing in {ckpt_dir})")
    return Path(latest)


def _load_run(model_dir: Path, run_dir: Path, ckpt_name: str | None, *, dtype: Any) -> LoadedBert:
    import tensorflow as tf

    config, vocab = _config_and_vocab(run_dir)
    if model_dir != run_dir:  # bert-as-service style: config/vocab from the base model dir
        base_config, vocab = _config_and_vocab(model_dir)
        if base_config != config:
            raise ValueError(f"config of {model_dir} differs from that of run {run_dir}")
    prefix = run_checkpoint(run_dir, ckpt_name)
    pretrainer = _new_pretrainer(config, dtype)
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=pretrainer, step=step)
    try:
        status = ckpt.read(str(prefix))
        status.assert_existing_objects_matched().expect_partial()  # optimizer state not needed
    except (AssertionError, tf.errors.OpError, ValueError) as err:
        raise ValueError(f"checkpoint {prefix} does not match run {run_dir}'s model: {err}") from err
    return LoadedBert(config=config, vocab_path=vocab, pretrainer=pretrainer, heads_loaded=True,
                      source=f"danmaku run {run_dir} checkpoint {prefix.name}", step=int(step.numpy()))
