"""``danmaku demo``: the whole study on the shared sample, in one resumable command.

import (video CSV + live chat) -> corpus (eval file = live broadcasts only) ->
instances -> the bigram count reference (``pretrain/reference.py``) -> a
``tiny`` BERT trained from scratch on CPU, its learning-rate schedule fitted to
the time budget (``demo/recipe.py``, ``pretrain/budget.py``) -> the study's
table (count reference, initial weights, trained, on train and held-out eval
instances) -> the meme picture, neighbours and score for both models -> a
downstream task for both (``tasks_stage.py``) -> a report (Markdown +
self-contained HTML).

Every stage records what it produced in ``state.json``; a re-run skips the
stages already done (same corpus version, same instances, the run resumes
from its last checkpoint) unless ``fresh`` is set. The numbers in the report
are computed in this run, never copied.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from danmaku.artifacts import VOCAB

NEIGHBOUR_QUERIES = ("阿夸", "晚安", "委员长", "夏色祭")


@dataclass
class DemoSettings:
    """What the demo runs on and how long it trains.

    Args:
        data: the shared sample (``video_danmaku/``, ``live_danmaku/``, ``vocab.txt``,
            ``meme_phrases.txt``).
        out: the run directory (store, corpus, instances, model, report).
        minutes: training time budget: the learning-rate schedule ends there
            (steps fixed from the throughput of the first steps, ``pretrain/budget.py``).
        steps: optimizer steps at most (the schedule ends at the budget or here).
        dupe_factor: passes over the corpus when making instances (Google: 10;
            the demo trains on far fewer sequences than one pass yields).
        eval_points: evaluations during training, for the curves.
        eval_batches: batches of 8 per split for the table (the study: 100).
        fresh: start over instead of reusing finished stages.
        task_classes, task_rows: size of the downstream uploader task (``demo/tasks_stage.py``):
            uploaders, and rows per uploader.
    """

    data: Path
    out: Path
    minutes: float = 15.0
    steps: int = 100_000
    dupe_factor: int = 5
    eval_points: int = 4
    eval_batches: int = 100
    fresh: bool = False
    task_classes: int = 8
    task_rows: int = 800

    @property
    def vocab(self) -> Path:
        return self.data / "vocab.txt"


@dataclass
class DemoState:
    """``state.json``: finished stages with their outputs and timings."""

    path: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DemoState:
        if path.is_file():
            return cls(path, json.loads(path.read_text())["stages"])
        return cls(path)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": self.stages}, ensure_ascii=False, indent=2))
        os.replace(tmp, self.path)


class DemoError(RuntimeError):
    """Missing input or a stage that cannot run; the message says what to do."""


StageCallback = Callable[[str, str, float], None]
"""``(title, event, seconds)`` with event ``"start"``, ``"done"`` or ``"reused"``."""


def _stage(state: DemoState, name: str, title: str, fn: Callable[[], dict[str, Any]],
           on_stage: StageCallback) -> dict[str, Any]:
    done = state.stages.get(name)
    if done and done.get("done"):
        on_stage(title, "reused", done["seconds"])
        return done
    on_stage(title, "start", 0.0)
    started = time.perf_counter()
    result = fn()
    result.update(done=True, seconds=time.perf_counter() - started)
    state.stages[name] = result
    state.save()
    on_stage(title, "done", result["seconds"])
    return result


def _ignore(*_args: Any) -> None:
    pass


def check_inputs(settings: DemoSettings) -> None:
    needed = ["video_danmaku", "live_danmaku", "vocab.txt", "meme_phrases.txt"]
    missing = [name for name in needed if not (settings.data / name).exists()]
    if missing:
        raise DemoError(f"{settings.data} lacks {', '.join(missing)}: pass --data pointing at the "
                        "shared sample (../shared/data beside the checkout)")


def run_demo(settings: DemoSettings, *, on_stage: StageCallback = _ignore,
             on_message: Callable[[str], None] = _ignore) -> Path:
    """Run (or resume) the demo; returns the path of ``report.html``.

    Progress goes to ``on_stage`` (each stage's start and end) and ``on_message``
    (figures along the way); nothing is printed here.
    """
    check_inputs(settings)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if settings.fresh and settings.out.exists():
        shutil.rmtree(settings.out)
    settings.out.mkdir(parents=True, exist_ok=True)
    state = DemoState.load(settings.out / "state.json")
    store_url = f"sqlite:///{(settings.out / 'danmaku.sqlite').resolve()}"

    imported = _stage(state, "import", "import the shared sample into the store",
                      lambda: _import(settings, store_url), on_stage)
    corpus = _stage(state, "corpus", "export the corpus (eval file = live broadcasts)",
                    lambda: _export(settings, store_url), on_stage)
    from danmaku.demo.recipe import DEFAULT

    vocab = _stage(state, "vocab", "choose the vocabulary (the training file's tokens)",
                   lambda: _vocab(settings, Path(corpus["dir"]), DEFAULT.trim_vocab), on_stage)
    instances = _stage(state, "instances", "make pretraining instances",
                       lambda: _instances(settings, Path(corpus["dir"]), Path(vocab["path"])), on_stage)
    reference = _stage(state, "reference", "count the bigram reference (training file)",
                       lambda: _reference(settings, Path(corpus["dir"]), Path(instances["dir"])), on_stage)
    training = _stage(state, "train", f"train the BERT ({settings.minutes:g} min budget)",
                      lambda: _train(settings, Path(instances["dir"]), on_message), on_stage)
    table = _stage(state, "evaluate", "evaluate initial and trained weights",
                   lambda: _evaluate(settings, Path(instances["dir"]), training), on_stage)
    embedded = _stage(state, "embed", "embed the meme phrases with both models",
                      lambda: _embed(settings, training), on_stage)
    from danmaku.demo.tasks_stage import TITLE, run_tasks_stage

    downstream = _stage(state, "tasks", TITLE,
                        lambda: run_tasks_stage(settings, store_url, training, on_message), on_stage)
    if not state.stages.get("report", {}).get("downstream"):
        state.stages.pop("report", None)  # written before the downstream stage existed
    report = _stage(state, "report", "write the report",
                    lambda: _report(settings, state, imported, corpus, instances, reference, training,
                                    table, embedded, downstream), on_stage)
    return Path(report["html"])


# -- stages --------------------------------------------------------------------
def _import(settings: DemoSettings, store_url: str) -> dict[str, Any]:
    from danmaku.importers.live_chat import import_live_chat
    from danmaku.importers.video_csv import import_video_csv
    from danmaku.store.db import make_engine
    from danmaku.store.stats import store_stats

    engine = make_engine(store_url)
    video = import_video_csv(engine, settings.data / "video_danmaku")
    live = import_live_chat(engine, settings.data / "live_danmaku")
    stats = store_stats(engine)
    engine.dispose()
    return {"store": store_url, "video_rows": video.rows, "live_rows": live.rows,
            "rejected": video.rejected + live.rejected, "by_kind": stats["by_kind"],
            "sources": stats["sources"], "danmaku": stats["danmaku"]}


def _export(settings: DemoSettings, store_url: str) -> dict[str, Any]:
    from sqlalchemy import select

    from danmaku.corpus.export import ExportOptions, export_corpus
    from danmaku.store.db import make_engine
    from danmaku.store.models import LIVE_BROADCAST, Source

    engine = make_engine(store_url)
    with engine.connect() as conn:
        rooms = tuple(sorted(conn.execute(
            select(Source.room_id).where(Source.kind == LIVE_BROADCAST).distinct()).scalars()))
    if not rooms:
        raise DemoError("the store holds no live broadcasts for the held-out eval file")
    result = export_corpus(engine, settings.vocab, root=settings.out / "corpora", name="demo",
                           options=ExportOptions(eval_rooms=rooms))
    engine.dispose()
    return {"dir": str(result.path), "version": result.manifest["version"], "eval_rooms": list(rooms),
            "manifest": result.manifest}


def _vocab(settings: DemoSettings, corpus_dir: Path, trim: bool) -> dict[str, Any]:
    """Google's vocabulary, or (``trim``) the part of it that the training file uses."""
    if not trim:
        from danmaku.text.tokenizer import load_vocab

        source = len(load_vocab(settings.vocab))
        return {"path": str(settings.vocab), "trimmed": False, "size": source, "source_size": source}
    from danmaku.pretrain.vocab_trim import trim_vocab

    summary = trim_vocab(corpus_dir, settings.vocab, settings.out / VOCAB)
    return {"path": str(summary.path), "trimmed": True, "size": summary.kept,
            "source_size": summary.source_size}


def _instances(settings: DemoSettings, corpus_dir: Path, vocab: Path, name: str = "instances"
               ) -> dict[str, Any]:
    from danmaku.pretrain.instances import InstanceOptions, prepare

    out = settings.out / name
    summary = prepare(corpus_dir, vocab, out, opts=InstanceOptions(dupe_factor=settings.dupe_factor))
    return {"dir": str(out), "splits": {split: asdict(stats) for split, stats in summary.splits.items()}}


def _reference(settings: DemoSettings, corpus_dir: Path, instances_dir: Path) -> dict[str, Any]:
    from danmaku.pretrain.reference import reference_metrics

    result = reference_metrics(corpus_dir, instances_dir, max_steps=settings.eval_batches)
    return {"rows": result.rows, "counted": result.counted}


def _train(settings: DemoSettings, instances_dir: Path, on_message: Callable[[str], None]) -> dict[str, Any]:
    """Train the recipe until its fitted schedule ends, pausing ``eval_points`` times for the curves.

    The budget counts training only: each pause (a checkpoint, an eval on 25
    batches per split, rebuilding the step) comes on top, and the fitted
    schedule is bound by steps, so a pause cannot cut its decay short.
    """
    from danmaku.demo.recipe import DEFAULT
    from danmaku.pretrain.budget import load_schedule
    from danmaku.pretrain.evaluate import evaluate
    from danmaku.pretrain.loading import load_bert, vocab_size_of
    from danmaku.pretrain.train import RunOptions, train

    run_dir = settings.out / "model"
    recipe = DEFAULT
    config = recipe.model_config(vocab_size_of(instances_dir / VOCAB))
    train_settings = recipe.train_settings(settings.minutes, settings.steps)
    evals: list[dict[str, Any]] = []
    history: list[dict[str, float]] = []
    chunk = settings.minutes / max(settings.eval_points, 1)
    began = time.monotonic()
    while True:
        result = train(run_dir, instances_dir=None if (run_dir / "run.json").is_file() else instances_dir,
                       config=config, settings=train_settings, on_notice=on_message,
                       options=RunOptions(max_minutes=chunk, save_every=100_000))
        history.extend(result.history)
        if not evals:
            evals.append(_eval_point(load_bert(run_dir / "initial"), instances_dir, 0, evaluate))
        if evals[-1]["step"] != result.step:
            evals.append(_eval_point(load_bert(run_dir), instances_dir, result.step, evaluate))
        on_message(f"step {result.step:,} of {result.total_steps:,}: held-out eval masked_lm_accuracy "
                   f"{evals[-1]['eval']['masked_lm_accuracy']:.3f}")
        if result.stopped == "done":
            break
    schedule = load_schedule(run_dir)
    return {"run_dir": str(run_dir), "step": result.step, "sequences": result.sequences,
            "history": history, "evals": evals, "minutes": (time.monotonic() - began) / 60,
            "recipe": recipe.describe(), "batch_size": train_settings.batch_size,
            "vocab_size": config.vocab_size,
            "shape": {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
                      "heads": config.num_attention_heads, "intermediate": config.intermediate_size},
            "schedule": None if schedule is None else {
                "steps": schedule.steps, "steps_per_second": 1 / schedule.seconds_per_step,
                "probe": list(schedule.probe), "timed_steps": schedule.timed_steps}}


def _eval_point(bert: Any, instances_dir: Path, step: int, evaluate: Callable) -> dict[str, Any]:
    rows = evaluate(bert, instances_dir, max_steps=25)
    return {"step": step, **rows}


def _evaluate(settings: DemoSettings, instances_dir: Path, training: dict[str, Any]) -> dict[str, Any]:
    from danmaku.pretrain.evaluate import evaluate
    from danmaku.pretrain.loading import load_bert

    run_dir = Path(training["run_dir"])
    before = evaluate(load_bert(run_dir / "initial"), instances_dir, max_steps=settings.eval_batches)
    after = evaluate(load_bert(run_dir), instances_dir, max_steps=settings.eval_batches)
    return {"before": before, "after": after}


def _embed(settings: DemoSettings, training: dict[str, Any]) -> dict[str, Any]:
    from danmaku.embed.models import load_encoder
    from danmaku.embed.neighbors import nearest
    from danmaku.embed.plot import Panel, draw, layout_2d
    from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups

    phrases = [p.strip() for p in (settings.data / "meme_phrases.txt").read_text("utf-8").splitlines()
               if p.strip()]
    groups = read_groups(DEFAULT_GROUPS)
    run_dir = Path(training["run_dir"])
    panels, scores, neighbours = [], {}, {}
    for name, model in (("initial", run_dir / "initial"), ("trained", run_dir)):
        encoder, _ = load_encoder(model)
        vectors = encoder.encode(phrases)
        panels.append(Panel(name, phrases, layout_2d(vectors)))
        score = group_mrr(phrases, vectors, groups)
        scores[name] = {"mrr": score.mrr, "chance": score.chance}
        neighbours[name] = {
            query: [phrases[i] for i, _ in nearest(vectors[phrases.index(query)], vectors, 5,
                                                    exclude=phrases.index(query))]
            for query in NEIGHBOUR_QUERIES if query in phrases
        }
    picture = settings.out / "meme.png"
    overlaps = draw(panels, picture, title="92 community phrases: PCA 50 + t-SNE")
    return {"picture": str(picture), "overlaps": overlaps, "scores": scores, "neighbours": neighbours,
            "phrases": len(phrases)}


def _report(settings: DemoSettings, state: DemoState, imported: dict, corpus: dict, instances: dict,
            reference: dict, training: dict, table: dict, embedded: dict, downstream: dict
            ) -> dict[str, Any]:
    from danmaku.demo.report import metrics_table, plain_table, plot_curves, write_report
    from danmaku.demo.tasks_stage import tasks_section

    plot_curves(training["history"], training["evals"], settings.out / "curves.png")
    counts = corpus["manifest"].get("counts", {})
    timings = [(name, f"{stage['seconds']:.0f} s") for name, stage in state.stages.items()]
    md = f"""# danmaku demo: the study, reproduced on the shared sample

Everything below was computed in this run (`{settings.out}`), from the raw files in `{settings.data}`.

## The study's table

A BERT of {_shape_words(training)} trained from scratch for {training['step']:,} steps of
{training['batch_size']} sequences ({training['sequences']:,} sequences of up to 128 tokens) in
{training['minutes']:.1f} min on this machine's CPU (training, plus the pauses for the curves' evals).
{_schedule_line(settings, training)}
{_vocab_line(training)}
"Before" is its initial (random) weights; the eval instances come from live broadcasts that the
training file does not contain. The reference rows are a bigram count model of the training file
({reference['counted']['tokens']:,} tokens; a masked token predicted from its visible left and right
neighbours, `danmaku pretrain eval --reference`) on exactly the same masked positions: what
training has to beat. Each row: {settings.eval_batches} batches of 8 instances.

{metrics_table([
    ("bigram counts (reference), training set", reference["rows"]["train"]),
    ("bigram counts (reference), evaluation set", reference["rows"]["eval"]),
    ("initial weights, training set", table["before"]["train"]),
    ("initial weights, evaluation set", table["before"]["eval"]),
    ("tuned, training set", table["after"]["train"]),
    ("tuned, evaluation set", table["after"]["eval"]),
])}

## Training curves

![training curves](curves.png)

## The meme picture

![meme picture](meme.png)

Meme score (mean reciprocal rank of a known group mate among each phrase's neighbours,
{embedded['phrases']} phrases; higher is better):

{plain_table(["model", "MRR", "chance"],
             [(name, f"{s['mrr']:.3f}", f"{s['chance']:.3f}") for name, s in embedded["scores"].items()])}

Nearest phrases (cosine, REDUCE_MEAN of the last layer):

{plain_table(["query", "initial weights", "trained"],
             [(q, " / ".join(embedded["neighbours"]["initial"][q]),
               " / ".join(embedded["neighbours"]["trained"][q]))
              for q in embedded["neighbours"]["trained"]])}

{tasks_section(downstream)}
## Data

- Store: {imported['sources']:,} sources, {imported['danmaku']:,} danmaku
  ({imported['video_rows']:,} video + {imported['live_rows']:,} live rows imported this run or before;
  {imported['rejected']} rejected lines).
- Corpus version `{corpus['version']}` (`{corpus['dir']}`); eval file = broadcasts of live rooms
  {', '.join(map(str, corpus['eval_rooms']))}.
{_counts_lines(counts)}
- Instances (`{instances['dir']}`, dupe factor {settings.dupe_factor}):
{_instance_lines(instances['splits'])}

## Timings

{plain_table(["stage", "time"], timings)}
"""
    md_path, html_path = write_report(settings.out, md, "danmaku demo report")
    return {"markdown": str(md_path), "html": str(html_path), "downstream": True}


def _shape_words(training: dict[str, Any]) -> str:
    shape = training.get("shape")
    if shape is None:  # a run from before the report said its shape: the recipe's preset
        from danmaku.pretrain.config import PRESETS

        preset = PRESETS[training["recipe"].get("preset", "tiny")]
        shape = {"layers": preset["num_hidden_layers"], "hidden": preset["hidden_size"],
                 "heads": preset["num_attention_heads"], "intermediate": preset["intermediate_size"]}
    layers = shape["layers"]
    return (f"{layers} layer{'s' if layers != 1 else ''}, hidden {shape['hidden']}, {shape['heads']} heads, "
            f"feed-forward {shape['intermediate']}")


def _loss_words(nsp_weight: float) -> str:
    if nsp_weight == 1.0:
        return "Google's loss (masked LM + next sentence)"
    if nsp_weight == 0.0:
        return "the masked-LM loss alone (no next-sentence term)"
    return f"the next-sentence loss weighted {nsp_weight:g} (Google's 1)"


def _zero_words(layers: int) -> str:
    if not layers:
        return ""
    which = "last layer's" if layers == 1 else f"last {layers} layers'"
    return f", the {which} residual-branch outputs (attention output, feed-forward output) started at 0"


def _schedule_line(settings: DemoSettings, training: dict[str, Any]) -> str:
    recipe, schedule = training["recipe"], training.get("schedule")
    if not schedule:
        fitted = f"The learning-rate schedule spans {training['step']:,} steps: "
    else:
        first, last = schedule["probe"]
        timed = schedule.get("timed_steps", last - first)
        where = (f"steps {first}-{last}" if timed <= last - first else
                 f"{timed:,} steps (from step {first} to the start of the decay, which the total could move "
                 "until then)")
        fitted = (f"The learning-rate schedule was fitted to the {settings.minutes:g}-minute budget: "
                  f"{schedule['steps_per_second']:.2f} steps/s measured over {where} gave "
                  f"{schedule['steps']:,} steps; ")
    decay = recipe.get("decay_fraction", 1.0)
    shape = ("then linear decay to 0 (Google's schedule and" if decay == 1.0 else
             f"held there, then linear decay to 0 over the last {decay:.0%} of the steps (Google's decays "
             "over all of them; Google's")
    return (fitted + f"warm-up to {recipe['learning_rate']:g}, {shape} "
            f"AdamWeightDecay, beta_2 {recipe['beta_2']:g}, epsilon {recipe['epsilon']:g}); dropout "
            f"{recipe['dropout']:g}; initial weights drawn with stddev "
            f"{recipe.get('initializer_range', 0.02):g} (Google's 0.02), the position table started "
            f"{recipe.get('position_init', 'random')}{_zero_words(recipe.get('zero_init_layers', 0))}; "
            f"{_loss_words(recipe.get('nsp_weight', 1.0))}. "
            "The recipe and the others `bench/quality.py` measured are in bench/RESULTS.md (\"quality\").")


def _vocab_line(training: dict[str, Any]) -> str:
    from danmaku.pretrain.config import CHINESE_VOCAB_SIZE

    size = training.get("vocab_size", CHINESE_VOCAB_SIZE)
    if size >= CHINESE_VOCAB_SIZE:
        return f"Its vocabulary is Google's Chinese one ({size:,} tokens)."
    return (f"Its vocabulary is the {size:,} tokens of Google's Chinese one ({CHINESE_VOCAB_SIZE:,}) "
            "that the training file uses (`danmaku pretrain vocab`): a model trained from scratch never "
            "sees the others, and not scoring them at every masked position makes each step cheaper.")


def _counts_lines(counts: dict[str, Any]) -> str:
    if not counts:
        return ""
    return "\n".join(f"- corpus {key}: {value:,}" if isinstance(value, int) else f"- corpus {key}: {value}"
                     for key, value in counts.items() if not isinstance(value, dict))


def _instance_lines(splits: dict[str, dict[str, Any]]) -> str:
    return "\n".join(f"  - {split}: {s.get('instances', 0):,} instances from {s.get('documents', 0):,} "
                     f"documents" for split, s in splits.items())
