"""``danmaku tasks eval``: one protocol, every model, every task, one table.

For each task directory (``train.csv``, ``dev.csv``, ``test.csv``, from
``danmaku tasks make`` or a user's own) and each model:

1. **fine-tuned**: ``danmaku.finetune.train.classify`` with the same settings for
   every model (early-stopped on dev), scored on test;
2. **linear probe**: logistic regression on the model's frozen ``danmaku embed``
   vectors (``probe.py``), scored on test;

both with bootstrap 95% intervals over the test rows (``bootstrap.py``, the same
resamples for every model of a task, so intervals are comparable); plus, once
per model, the meme score (``danmaku.embed.score``: group MRR on the study's 92
phrases). Each task also gets its majority-class baseline (the most frequent
training label), the floor every model must clear.

Work goes to ``OUT/<task>/<model>/``: the fine-tuning run (resumable: re-running
the command continues or reuses it) and ``probe.json`` (reused when the task
files and settings are unchanged). The table is written to ``OUT/eval.json``
and ``OUT/eval.md``. Models are loaded one at a time; time and memory are
bounded by the task size (``tasks make --max-per-class``), the epochs and
``probe_max_train``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from danmaku.embed.models import ModelSpec
from danmaku.finetune.train import FinetuneOptions, FinetuneSettings
from danmaku.tasks.bootstrap import DEFAULT_RESAMPLES, Interval, bootstrap
from danmaku.tasks.probe import DEFAULT_MAX_TRAIN

SPLIT_FILES = ("train.csv", "dev.csv", "test.csv")
EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"


class EvalError(ValueError):
    """A task directory or model that cannot be evaluated; the message says why."""


@dataclass(frozen=True)
class EvalSettings:
    """The protocol: the same for every model (stored with the results)."""

    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    probe_max_train: int | None = DEFAULT_MAX_TRAIN
    probe_max_iter: int = 1000
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 12345
    meme: bool = True


@dataclass
class EvalCallbacks:
    """Progress for the CLI (nothing is printed by the library)."""

    stage: Callable[[str], None] | None = None  # "task / model: what"
    begin: Callable[[str, int, int], None] | None = None  # (what, done, total) of a new bar
    advance: Callable[[int], None] | None = None  # completed so far on the current bar
    notice: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        if self.stage:
            self.stage(text)


@dataclass
class ModelScores:
    """One model on one task."""

    task: str
    model: str
    finetuned: dict[str, Interval]
    probe: dict[str, Interval]
    steps: int
    stopped: str
    finetune_seconds: float
    probe_seconds: float
    probe_train_rows: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finetuned"] = {k: v.as_dict() for k, v in self.finetuned.items()}
        data["probe"] = {k: v.as_dict() for k, v in self.probe.items()}
        return data


@dataclass
class EvalReport:
    tasks: list[str]
    models: list[str]
    scores: list[ModelScores]
    baselines: dict[str, dict[str, Interval]]  # task -> majority baseline
    test_rows: dict[str, int]
    meme: dict[str, dict[str, float]]  # model -> {"mrr", "chance"}
    settings: EvalSettings

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks, "models": self.models, "scores": [s.as_dict() for s in self.scores],
            "baselines": {t: {k: v.as_dict() for k, v in b.items()} for t, b in self.baselines.items()},
            "test_rows": self.test_rows, "meme": self.meme, "settings": asdict(self.settings),
        }

    def rows(self) -> list[list[str]]:
        """The table as text cells: a majority row per task, then one row per model."""
        out = []
        for task in self.tasks:
            base = self.baselines[task]
            out.append([task, "majority class", f"{base['accuracy']}", f"{base['macro_f1']}", "-", "-", "-"])
            for s in (s for s in self.scores if s.task == task):
                meme = self.meme.get(s.model)
                out.append([task, s.model, f"{s.finetuned['accuracy']}", f"{s.finetuned['macro_f1']}",
                            f"{s.probe['accuracy']}", f"{s.probe['macro_f1']}",
                            f"{meme['mrr']:.3f}" if meme else "-"])
        return out


HEADER = ["task", "model", "fine-tuned accuracy", "fine-tuned macro-F1", "probe accuracy", "probe macro-F1",
          "meme MRR"]


def markdown_table(report: EvalReport) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in report.rows()]
    return "\n".join(lines)


def task_name(task_dir: Path) -> str:
    return task_dir.resolve().name


def check_task_dir(task_dir: Path) -> None:
    missing = [name for name in SPLIT_FILES if not (task_dir / name).is_file()]
    if missing:
        raise EvalError(f"{task_dir} is not a task directory: {', '.join(missing)} missing "
                        "(make one with `danmaku tasks make`)")


@dataclass
class _Task:
    """One task directory read once: rows, labels and label ids."""

    name: str
    dir: Path
    train: Any
    test: Any
    labels: list[str]
    y_train: list[int]
    y_test: list[int]

    @classmethod
    def read(cls, task_dir: Path) -> _Task:
        from danmaku.finetune.data import label_set, read_labelled_csv

        check_task_dir(task_dir)
        train = read_labelled_csv(task_dir / "train.csv")
        labels = label_set(train)
        test = read_labelled_csv(task_dir / "test.csv", labels)
        if not len(test):
            raise EvalError(f"{task_dir / 'test.csv'} has no usable row")
        index = {label: i for i, label in enumerate(labels)}
        return cls(task_name(task_dir), task_dir, train, test, labels,
                   [index[label] for label in train.labels], [index[label] for label in test.labels])


class _LazyEncoder:
    """A model's ``Encoder``, loaded on first use (a probe read from its cache needs none)."""

    def __init__(self, spec: ModelSpec, max_seq_len: int) -> None:
        self.spec, self.max_seq_len, self._encoder = spec, max_seq_len, None

    def get(self):
        if self._encoder is None:
            self._encoder = _encoder(self.spec, self.max_seq_len)
        return self._encoder


def evaluate_tasks(models: Sequence[ModelSpec], task_dirs: Sequence[str | Path], out: str | Path,
                   settings: EvalSettings | None = None, options: FinetuneOptions | None = None,
                   callbacks: EvalCallbacks | None = None) -> EvalReport:
    """Run the protocol (module docstring); returns the report and writes ``OUT/eval.{json,md}``.

    Model by model (one in memory at a time), task by task.
    """
    from danmaku.finetune.metrics import majority_class
    from danmaku.finetune.train import read_predictions

    settings = settings or EvalSettings()
    callbacks = callbacks or EvalCallbacks()
    out = Path(out)
    names = [task_name(Path(d)) for d in task_dirs]
    if len(set(names)) != len(names):
        raise EvalError(f"task directories must have different names, got {names}")
    model_names = [m.name for m in models]
    if len(set(model_names)) != len(model_names):
        raise EvalError(f"model names must differ, got {model_names}; use NAME=MODEL")
    missing = [m.path for m in models if not Path(m.path).exists() and not Path(f"{m.path}.index").exists()]
    if missing:  # before hours of work on the other models
        raise EvalError(f"model not found: {', '.join(missing)} (no such directory or checkpoint prefix)")
    tasks = [_Task.read(Path(d)) for d in task_dirs]
    seed, resamples = settings.seed, settings.resamples
    report = EvalReport(names, model_names, [], {}, {}, {}, settings)
    for task in tasks:
        guess = majority_class(task.y_train)
        report.baselines[task.name] = bootstrap(task.y_test, [guess] * len(task.y_test), len(task.labels),
                                                resamples=resamples, seed=seed)
        report.test_rows[task.name] = len(task.test)
    for spec in models:
        encoder = _LazyEncoder(spec, settings.finetune.max_seq_len)
        for task in tasks:
            work = out / task.name / spec.name
            k = len(task.labels)
            callbacks.say(f"{task.name} / {spec.name}: linear probe")
            started = time.monotonic()
            probe_pred, probe_rows = _probe(spec, task, encoder, work, settings, callbacks)
            probe_seconds = time.monotonic() - started
            callbacks.say(f"{task.name} / {spec.name}: fine-tune")
            result = _finetune(spec, task.dir, work, settings, options, callbacks)
            ft_true, ft_pred = read_predictions(work / "predictions-test.csv", task.labels)
            report.scores.append(ModelScores(
                task=task.name, model=spec.name,
                finetuned=bootstrap(ft_true, ft_pred, k, resamples=resamples, seed=seed),
                probe=bootstrap(task.y_test, probe_pred, k, resamples=resamples, seed=seed),
                steps=result.step, stopped=result.stopped,
                finetune_seconds=float(result.metrics.get("train_seconds", 0.0)),
                probe_seconds=probe_seconds, probe_train_rows=probe_rows))
        if settings.meme:
            callbacks.say(f"{spec.name}: meme score")
            report.meme[spec.name] = _meme(encoder.get())
        del encoder
    report.scores.sort(key=lambda s: (names.index(s.task), model_names.index(s.model)))
    out.mkdir(parents=True, exist_ok=True)
    (out / EVAL_JSON).write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n",
                                 encoding="utf-8")
    (out / EVAL_MD).write_text(markdown_table(report) + "\n", encoding="utf-8")
    return report


def _encoder(spec: ModelSpec, max_seq_len: int):
    from danmaku.embed.encoder import EncoderSettings
    from danmaku.embed.models import ModelError, load_encoder

    try:
        encoder, _ = load_encoder(spec.path, EncoderSettings(max_seq_len=max_seq_len))
    except ModelError as err:
        raise EvalError(str(err)) from err
    return encoder


def _probe(spec: ModelSpec, task: _Task, encoder: _LazyEncoder, work: Path, settings: EvalSettings,
           callbacks: EvalCallbacks):
    """Test predictions of the linear probe, reused from ``probe.json`` when nothing changed."""
    import numpy as np

    from danmaku.artifacts import sha256_file
    from danmaku.finetune.train import model_fingerprint
    from danmaku.tasks.probe import probe_predictions

    key = {"model": spec.path, "fingerprint": model_fingerprint(spec.path),
           "train": sha256_file(task.train.path), "test": sha256_file(task.test.path),
           "max_train": settings.probe_max_train, "max_iter": settings.probe_max_iter, "seed": settings.seed,
           "max_seq_len": settings.finetune.max_seq_len, "labels": task.labels}
    cache = work / "probe.json"
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return np.asarray(saved["predicted"]), int(saved["train_rows"])
    if len(set(task.y_train)) < 2:
        raise EvalError(f"{task.train.path}: the probe needs two classes")
    rows = min(len(task.train), settings.probe_max_train or len(task.train))
    if callbacks.begin:
        callbacks.begin(f"encode ({spec.name})", 0, rows + len(task.test))
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if callbacks.advance:
            callbacks.advance(done)

    predicted, used = probe_predictions(encoder.get(), task.train.texts, task.y_train, task.test.texts,
                                        seed=settings.seed, max_train=settings.probe_max_train,
                                        max_iter=settings.probe_max_iter, on_batch=on_batch)
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "train_rows": used, "predicted": predicted.tolist()}) + "\n",
                     encoding="utf-8")
    return predicted, used


def _finetune(spec: ModelSpec, task_dir: Path, work: Path, settings: EvalSettings,
              options: FinetuneOptions | None, callbacks: EvalCallbacks):
    from danmaku.finetune.train import FinetuneError, classify

    def on_begin(start: int, total: int) -> None:
        if callbacks.begin:
            callbacks.begin(f"fine-tune ({spec.name})", start, total)

    def on_step(step: int, _loss: float) -> None:
        if callbacks.advance:
            callbacks.advance(step)

    def on_notice(text: str) -> None:
        if callbacks.notice:
            callbacks.notice(f"{spec.name}: {text}")

    try:
        result = classify(spec.path, task_dir / "train.csv", task_dir / "dev.csv", work,
                          test=task_dir / "test.csv", settings=settings.finetune, options=options,
                          on_begin=on_begin, on_step=on_step, on_notice=on_notice)
    except FinetuneError as err:
        raise EvalError(f"{task_dir} / {spec.name}: {err}") from err
    if not result.finished:
        raise EvalError(f"fine-tuning {spec.name} on {task_dir} paused ({result.stopped}); run the same "
                        "command again to continue")
    return result


def _meme(encoder) -> dict[str, float]:
    from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups
    from danmaku.embed.texts import DEFAULT_PHRASES, read_phrases

    phrases = read_phrases(DEFAULT_PHRASES)
    score = group_mrr(phrases, encoder.encode(phrases), read_groups(DEFAULT_GROUPS))
    return {"mrr": score.mrr, "chance": score.chance}
