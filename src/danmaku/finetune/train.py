"""``danmaku finetune classify``: fine-tune a sequence classifier, resumable, deterministic.

The recipe is Google's ``run_classifier.py``: ``[CLS] text [SEP]``, the pooled
output -> dropout -> dense head (keras-hub's ``BertTextClassifier``), softmax
cross-entropy, Google's AdamWeightDecay (``pretrain/optimization.py``: weight
decay except LayerNorm and biases, clip to global norm 1.0) with linear warm-up
over ``warmup_fraction`` of the steps and linear decay to 0. Added to it, what a
long run on a shared machine needs:

* **early stopping on dev**: the dev set is scored every ``eval_every`` steps
  (default: each epoch); after ``patience`` scores without a better
  ``monitor`` value training stops, and the best-scoring weights are the result;
* **resumable**: a checkpoint (weights, optimizer slots, step, dropout RNG
  state) every ``save_every`` steps and at every dev score, with ``state.json``
  naming it; running the same command again continues where it stopped, and a
  finished run is reused, not repeated;
* **deterministic**: the head's initialisation, the dropout masks and the data
  order (a permutation per epoch drawn from ``(seed, epoch)``) follow the seed,
  so a resumed run sees the batches the uninterrupted run would have seen.

The output directory::

    OUT/finetune.json          model, CSVs (sha256), labels, settings
    OUT/state.json             step, best dev score and where it is, dev history
    OUT/checkpoints/, OUT/best/  while training (removed when done)
    OUT/hf/                    the classifier for transformers.pipeline("text-classification")
    OUT/metrics.json           dev (and test) metrics of the best weights, majority baseline
    OUT/predictions-dev.csv    text,label,predicted (and -test.csv)
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from danmaku.finetune.data import DataError, Encoded, LabelledRows, label_set, read_labelled_csv

FORMAT = "danmaku-finetune/1"
RUN_FILE = "finetune.json"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
HF_DIR = "hf"
CHECKPOINTS = "checkpoints"
BEST = "best"
MONITORS = ("macro_f1", "accuracy")
OUR_FILES = (RUN_FILE, STATE_FILE, METRICS_FILE, "predictions-dev.csv", "predictions-test.csv")
OUR_DIRS = (HF_DIR, CHECKPOINTS, BEST)


class FinetuneError(ValueError):
    """A user error about the output directory, the settings or the model."""


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides the result (stored in ``finetune.json``).

    Args:
        epochs: passes over the training rows (Google: 3).
        batch_size: rows per optimizer step (Google: 32).
        learning_rate: peak learning rate (Google suggests 2e-5 .. 5e-5 for BERT-Base;
            small models trained from scratch want ~1e-3).
        warmup_fraction: share of the steps spent warming up (Google: 0.1).
        weight_decay: decoupled weight decay (Google: 0.01).
        max_seq_len: tokens per text counting ``[CLS]`` and ``[SEP]``.
        dropout: dropout before the head (default: the model's hidden dropout).
        seed: head initialisation, dropout masks, data order.
        eval_every: steps between dev scores (0: at the end of every epoch).
        patience: dev scores without improvement before stopping (0: never stop early).
        monitor: ``macro_f1`` or ``accuracy`` on dev.
        max_steps: stop after this many steps at most (the schedule spans them).
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_seq_len: int = 64
    dropout: float | None = None
    seed: int = 12345
    eval_every: int = 0
    patience: int = 2
    monitor: str = "macro_f1"
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise FinetuneError("epochs and batch size must be positive")
        if not self.learning_rate > 0:
            raise FinetuneError(f"learning rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_fraction < 1:
            raise FinetuneError(f"warmup fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise FinetuneError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_seq_len < 3:
            raise FinetuneError(f"max_seq_len must be at least 3, got {self.max_seq_len}")
        if self.eval_every < 0 or self.patience < 0:
            raise FinetuneError("eval_every and patience must not be negative")
        if self.monitor not in MONITORS:
            raise FinetuneError(f"monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise FinetuneError("max_steps must be positive")


@dataclass(frozen=True)
class FinetuneOptions:
    """How to run (may change between a run and its resumption)."""

    save_every: int = 500
    max_minutes: float | None = None
    deterministic: bool = False


@dataclass
class FinetuneResult:
    out: Path
    step: int
    total_steps: int
    stopped: str  # "done", "early stop" or "time budget" (then run again to continue)
    reused: bool = False
    metrics: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.metrics is not None


Callback = Callable[..., None] | None


# ---------------------------------------------------------------------------
# the run directory
# ---------------------------------------------------------------------------
WEIGHT_FILES = ("*.index", "*.data-*", "*.safetensors", "*config.json", "vocab.txt", "checkpoint")


def model_fingerprint(*paths: str | Path | None) -> str:
    """A cheap identity of the weights at ``paths`` (names, sizes and mtimes of the weight files):
    a run that trained on, or a model replaced under the same path, is not taken for the old one."""
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if not path.is_dir():  # a checkpoint prefix: its files beside it
            files = sorted(path.parent.glob(f"{path.name}*"))
        else:
            files = sorted({f for pattern in WEIGHT_FILES for d in (path, path / "checkpoints")
                            for f in d.glob(pattern)})
        for f in files:
            stat = f.stat()
            digest.update(f"{f.relative_to(path.parent)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _manifest(model: str, ckpt_name: str | None, tuned_dir: str | None, rows: dict[str, LabelledRows],
              labels: list[str], settings: FinetuneSettings) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": {"path": str(model), "ckpt_name": ckpt_name, "tuned_dir": tuned_dir,
                  "fingerprint": model_fingerprint(model, tuned_dir)},
        "data": {split: r.as_manifest() for split, r in rows.items()},
        "labels": labels,
        "settings": asdict(settings),
    }


def _same_run(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between an existing run and the one asked for (CSV paths may move)."""
    diff = []
    if old.get("model") != new["model"]:
        diff.append("model")
    old_data, new_data = old.get("data", {}), new["data"]
    for split in sorted(set(old_data) | set(new_data)):
        if old_data.get(split, {}).get("sha256") != new_data.get(split, {}).get("sha256"):
            diff.append(f"{split} CSV")
    for key in ("labels", "settings"):
        if old.get(key) != new[key]:
            diff.append(key)
    return diff


def clear_run(out: Path) -> None:
    """Remove what ``classify`` wrote in ``out`` (and nothing else a user may keep there)."""
    for name in OUR_FILES:
        (out / name).unlink(missing_ok=True)
    for name in OUR_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_predictions(path: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted) label ids from a ``predictions-*.csv``."""
    index = {label: i for i, label in enumerate(labels)}
    truth, predicted = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for _text, label, guess in reader:
            truth.append(index[label])
            predicted.append(index[guess])
    return np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)


def _write_predictions(path: Path, rows: LabelledRows, predicted: np.ndarray, labels: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label", "predicted"))
        writer.writerows(zip(rows.texts, rows.labels, (labels[i] for i in predicted), strict=True))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------
class _Run:
    """Model, optimizer, checkpoints and the compiled step of one fine-tuning run."""

    def __init__(self, bert: Any, num_classes: int, settings: FinetuneSettings, total_steps: int,
                 out: Path, deterministic: bool) -> None:
        import keras
        import tensorflow as tf

        from danmaku.finetune.classifier import build_classifier
        from danmaku.pretrain.optimization import AdamWeightDecay, WarmupLinearDecay, decayed_variables

        keras.utils.set_random_seed(settings.seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        self.model = build_classifier(bert, num_classes, dropout=settings.dropout)
        decay = [*decayed_variables(self.model), self.model.output_dense.kernel]
        self.optimizer = AdamWeightDecay(
            WarmupLinearDecay(settings.learning_rate, total_steps,
                              int(settings.warmup_fraction * total_steps)),
            weight_decay_rate=settings.weight_decay, decay_variables=decay, global_clipnorm=1.0)
        variables = self.model.trainable_variables
        self.optimizer.build(variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="dd_finetune_step")
        # The backbone's dropout seeds were drawn when load_bert built it, from whatever the
        # process did before; reset every one from the seed so the masks depend on it alone.
        rng = [v for v in self.model.variables if "seed_generator_state" in v.name]
        for k, state in enumerate(rng):
            state.assign(np.asarray([settings.seed * 1000 + k, 0], dtype=state.dtype))
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              dropout_rng=rng)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(out / CHECKPOINTS), max_to_keep=2,
                                                  checkpoint_name="ckpt", step_counter=self.step)
        self.weights_only = tf.train.Checkpoint(model=self.model)
        model, optimizer = self.model, self.optimizer
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec, tf.TensorSpec([None], tf.int32)], reduce_retracing=True)
        def train_step(token_ids, padding_mask, labels):
            with tf.GradientTape() as tape:
                logits = model({"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids),
                                "padding_mask": padding_mask}, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            self.step.assign_add(1)
            return loss

        self.train_step = train_step

    def restore(self, name: str) -> None:
        self.checkpoint.restore(str(self.manager.directory + "/" + name)).assert_existing_objects_matched()

    def save(self) -> str:
        return Path(self.manager.save(checkpoint_number=int(self.step.numpy()))).name


def _batch_rows(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of the ``step``-th batch (0-based): epoch ``e`` walks ``permutation(seed, e)``."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size:(k + 1) * batch_size]


def classify(model: str | Path, train: str | Path, dev: str | Path, out: str | Path, *,
             test: str | Path | None = None, settings: FinetuneSettings | None = None,
             options: FinetuneOptions | None = None, ckpt_name: str | None = None,
             tuned_dir: str | Path | None = None, fresh: bool = False,
             on_begin: Callback = None, on_step: Callback = None, on_eval: Callback = None,
             on_notice: Callback = None) -> FinetuneResult:
    """Fine-tune MODEL on ``train``, early-stopped on ``dev``; writes ``out`` (module docstring).

    Callbacks (nothing is printed here): ``on_begin(start_step, total_steps)``,
    ``on_step(step, loss)`` after every step, ``on_eval(step, dev_metrics,
    improved)`` after every dev score, ``on_notice(text)`` for what a user should
    read (rows left out, texts truncated, a reused run).

    Raises ``DataError`` for unusable CSVs and ``FinetuneError`` for a run
    directory started with other inputs, or a model that cannot be loaded.
    """
    settings = settings or FinetuneSettings()
    options = options or FinetuneOptions()
    out = Path(out)
    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        if on_notice:
            on_notice(text)

    rows = {"train": read_labelled_csv(train)}
    labels = label_set(rows["train"])
    rows["dev"] = read_labelled_csv(dev, labels)
    if test is not None:
        rows["test"] = read_labelled_csv(test, labels)
    for split, r in rows.items():
        if r.bad:
            notice(r.problems())
        if not len(r):
            raise DataError(f"{r.path} ({split}) has no usable row: {r.problems() or 'it is empty'}")
    manifest = _manifest(str(model), ckpt_name, str(tuned_dir) if tuned_dir else None, rows, labels, settings)
    if fresh:
        clear_run(out)
    run_file = out / RUN_FILE
    if run_file.is_file():
        diff = _same_run(json.loads(run_file.read_text(encoding="utf-8")), manifest)
        if diff:
            raise FinetuneError(f"{out} holds a run started with other {', '.join(diff)}; run the same "
                                "command to continue it, or use a new --out (or --fresh)")
    state_path = out / STATE_FILE
    state: dict[str, Any] = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    if state.get("done") and (out / METRICS_FILE).is_file():
        metrics = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
        notice(f"{out} is finished (step {state['step']}); reusing its results")
        return FinetuneResult(out, state["step"], state["total_steps"], state["stopped"], reused=True,
                              metrics=metrics, notices=notices)

    bert = _load(model, ckpt_name, tuned_dir, settings.max_seq_len)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(run_file, manifest)
    encoded = _encode(bert, rows, labels, settings.max_seq_len, notice)
    n_train = len(encoded["train"])
    per_epoch = math.ceil(n_train / settings.batch_size)
    total = per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    eval_every = settings.eval_every or per_epoch
    run = _Run(bert, len(labels), settings, total, out, options.deterministic)

    step = 0
    if state.get("checkpoint"):
        run.restore(state["checkpoint"])
        step = int(state["step"])
    else:
        state = {"step": 0, "total_steps": total, "checkpoint": None, "best_step": None, "best_score": None,
                 "best_checkpoint": None, "wait": 0, "evals": [], "stopped": None, "done": False,
                 "seconds": 0.0}
    from danmaku.finetune.classifier import Predictor

    predictor = Predictor(run.model)
    began = time.monotonic()
    seconds_before = float(state.get("seconds", 0.0))

    def save(best_improved: bool = False) -> None:
        state["step"] = step
        state["checkpoint"] = run.save()
        state["seconds"] = seconds_before + time.monotonic() - began
        old_best = state.get("best_checkpoint")
        if best_improved:
            name = f"ckpt-{step}"
            run.weights_only.write(str(out / BEST / name))
            state["best_checkpoint"] = name
        _write_json(state_path, state)
        if best_improved and old_best and old_best != state["best_checkpoint"]:
            for f in (out / BEST).glob(f"{old_best}.*"):
                f.unlink()

    if on_begin:
        on_begin(step, total)
    budget = options.max_minutes
    while step < total and state.get("stopped") is None:
        ids, mask, y = encoded["train"].batch(_batch_rows(step, n_train, settings.batch_size, settings.seed))
        loss = float(run.train_step(ids, mask, y))
        step += 1
        state["loss_sum"] = state.get("loss_sum", 0.0) + loss  # since the last dev score
        state["loss_steps"] = state.get("loss_steps", 0) + 1
        if on_step:
            on_step(step, loss)
        if step % eval_every == 0 or step % per_epoch == 0 or step == total:
            dev_metrics = _score(predictor, encoded["dev"], labels)
            score = dev_metrics[settings.monitor]
            improved = state["best_score"] is None or score > state["best_score"]
            if improved:
                state.update(best_step=step, best_score=score, wait=0)
            else:
                state["wait"] += 1
            state["evals"].append({"step": step, "epoch": round(step / per_epoch, 3),
                                   "train_loss": state["loss_sum"] / max(state["loss_steps"], 1),
                                   "dev_accuracy": dev_metrics["accuracy"],
                                   "dev_macro_f1": dev_metrics["macro_f1"]})
            state["loss_sum"], state["loss_steps"] = 0.0, 0
            if settings.patience and state["wait"] >= settings.patience and step < total:
                state["stopped"] = "early stop"
            save(best_improved=improved)
            if on_eval:
                on_eval(step, dev_metrics, improved)
        elif step % options.save_every == 0:
            save()
        if budget is not None and time.monotonic() - began > 60 * budget and step < total \
                and state.get("stopped") is None:
            save()
            notice(f"time budget of {budget:g} min reached at step {step} of {total}; run the same "
                   "command again to continue")
            return FinetuneResult(out, step, total, "time budget", notices=notices)
    stopped = state.get("stopped") or "done"
    state["stopped"] = stopped
    metrics = _finish(run, predictor, bert, encoded, rows, labels, state, settings, out)
    state["done"] = True
    state["seconds"] = seconds_before + time.monotonic() - began
    metrics["train_seconds"] = state["seconds"]
    _write_json(out / METRICS_FILE, metrics)
    _write_json(state_path, state)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(out / BEST, ignore_errors=True)
    return FinetuneResult(out, state["step"], total, stopped, metrics=metrics, notices=notices)


def _load(model: str | Path, ckpt_name: str | None, tuned_dir: str | Path | None, max_seq_len: int):
    from danmaku.pretrain.loading import load_bert

    try:
        bert = load_bert(model, ckpt_name=ckpt_name, tuned_dir=tuned_dir)
    except (FileNotFoundError, ValueError) as err:
        raise FinetuneError(f"cannot load model {model}: {err}") from err
    if max_seq_len > bert.config.max_position_embeddings:
        raise FinetuneError(f"max_seq_len {max_seq_len} exceeds the model's "
                            f"{bert.config.max_position_embeddings} positions")
    return bert


def _encode(bert: Any, rows: dict[str, LabelledRows], labels: list[str], max_seq_len: int,
            notice: Callable[[str], None]) -> dict[str, Encoded]:
    from danmaku.finetune.data import encode_rows
    from danmaku.text.tokenizer import BertTokenizer

    tokenizer = BertTokenizer(bert.vocab_path, do_lower_case=True)
    index = {label: i for i, label in enumerate(labels)}
    encoded = {}
    for split, r in rows.items():
        encoded[split] = encode_rows(tokenizer, r.texts, [index[label] for label in r.labels], max_seq_len)
        if encoded[split].truncated:
            notice(f"{split}: {encoded[split].truncated} of {len(r)} text(s) longer than max_seq_len "
                   f"{max_seq_len} tokens were truncated")
    return encoded


def _score(predictor: Any, data: Encoded, labels: list[str]) -> dict[str, Any]:
    from danmaku.finetune.metrics import classification_metrics

    return classification_metrics(data.labels, predictor.logits(data).argmax(axis=1), labels)


def _finish(run: _Run, predictor: Any, bert: Any, encoded: dict[str, Encoded],
            rows: dict[str, LabelledRows], labels: list[str], state: dict[str, Any],
            settings: FinetuneSettings, out: Path) -> dict[str, Any]:
    """Best weights back in, final metrics and predictions, the HF export (staged, then renamed)."""
    from danmaku.finetune.classifier import export_hf
    from danmaku.finetune.metrics import classification_metrics, majority_baseline

    if state.get("best_checkpoint"):
        run.weights_only.read(str(out / BEST / state["best_checkpoint"])).assert_existing_objects_matched()
    metrics: dict[str, Any] = {
        "format": FORMAT, "model": bert.source, "labels": labels, "steps": state["step"],
        "total_steps": state["total_steps"], "best_step": state["best_step"], "stopped": state["stopped"],
        "monitor": settings.monitor, "rows": {split: len(r) for split, r in rows.items()},
        "left_out": {split: dict(r.bad) for split, r in rows.items()},
        "truncated": {split: e.truncated for split, e in encoded.items()},
        "history": state["evals"], "majority_baseline": {},
    }
    for split in ("dev", "test"):
        if split not in encoded:
            continue
        predicted = predictor.logits(encoded[split]).argmax(axis=1)
        metrics[split] = classification_metrics(encoded[split].labels, predicted, labels)
        metrics["majority_baseline"][split] = majority_baseline(encoded["train"].labels,
                                                                encoded[split].labels, labels)
        _write_predictions(out / f"predictions-{split}.csv", rows[split], predicted, labels)
    staging = out / f".{HF_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    export_hf(run.model, bert, labels, staging, max_seq_len=settings.max_seq_len)
    shutil.rmtree(out / HF_DIR, ignore_errors=True)
    staging.rename(out / HF_DIR)
    return metrics
