"""Benchmark: the demo-sized downstream uploader task, its time and its accuracy on this machine.

The same task and protocol as the demo's downstream stage (``danmaku.demo.tasks_stage``):
``danmaku tasks make uploader`` (8 uploaders with the most danmaku, at most 800
rows each, split by video, vocab filter) from a store of the shared sample,
then ``danmaku tasks eval`` for each model -- fine-tuning (6 epochs, learning
rate 3e-4, max_seq_len 32, early stopping on dev) and the logistic-regression
probe on frozen vectors. The reference measured in the same run is the
majority-class baseline (the most frequent training uploader).

Models: ``--model NAME=PATH`` (repeatable; e.g. a demo run's ``model/initial``
and ``model``); by default one randomly initialised ``tiny`` BERT (the demo's
shape), i.e. what fine-tuning gets without any pretraining.

    python bench/tasks.py [--db demo/run/danmaku.sqlite] [--model trained=demo/run/model ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def random_tiny(out: Path) -> Path:
    """A Google-format model dir with the demo's ``tiny`` shape and random weights."""
    import shutil

    import keras

    from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint
    from danmaku.pretrain.config import BertConfig
    from danmaku.pretrain.model import BertPretrainer

    keras.utils.set_random_seed(0)
    config = BertConfig.preset("tiny")
    out.mkdir(parents=True, exist_ok=True)
    config.to_json_file(out / "bert_config.json")
    shutil.copyfile(SHARED / "vocab.txt", out / "vocab.txt")
    write_google_checkpoint(google_weights(BertPretrainer.from_bert_config(config)), out / "bert_model.ckpt")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a store of the shared sample (default: import it into a temp file)")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--rows", type=int, default=800, help="rows per uploader")
    parser.add_argument("--work", type=Path, help="work directory (default: a temp dir)")
    args = parser.parse_args()

    from danmaku.demo.tasks_stage import EPOCHS, LEARNING_RATE, MAX_SEQ_LEN, PROBE_MAX_TRAIN
    from danmaku.embed.models import parse_model_spec
    from danmaku.finetune.train import FinetuneSettings
    from danmaku.store.db import make_engine
    from danmaku.tasks.evaluate import EvalSettings, evaluate_tasks
    from danmaku.tasks.make import TaskOptions, make_task
    from danmaku.tasks.plan import ClassChoice

    work = args.work or Path(tempfile.mkdtemp(prefix="dd-bench-tasks-"))
    work.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []
    if args.db:
        engine = make_engine(args.db)
    else:
        from danmaku.importers.video_csv import import_video_csv

        engine = make_engine(f"sqlite:///{work / 'store.sqlite'}")
        started = time.perf_counter()
        import_video_csv(engine, SHARED / "video_danmaku")
        timings.append(("import the shared video sample (not part of the task)",
                        time.perf_counter() - started))
    started = time.perf_counter()
    task = make_task(engine, "uploader", work / "task", vocab=SHARED / "vocab.txt", force=True,
                     options=TaskOptions(choice=ClassChoice(classes=args.classes), max_per_class=args.rows))
    make_seconds = time.perf_counter() - started
    rows = task.manifest["rows"]
    specs = [parse_model_spec(m) for m in args.model] or [
        parse_model_spec(f"random tiny={random_tiny(work / 'random-tiny')}")]
    settings = EvalSettings(
        finetune=FinetuneSettings(epochs=EPOCHS, learning_rate=LEARNING_RATE, max_seq_len=MAX_SEQ_LEN),
        probe_max_train=PROBE_MAX_TRAIN, meme=False)
    started = time.perf_counter()
    report = evaluate_tasks(specs, [task.out], work / "eval", settings)
    eval_seconds = time.perf_counter() - started
    name = report.tasks[0]
    base = report.baselines[name]

    print(f"## tasks: demo-sized uploader task ({len(task.manifest['selection']['chosen'])} uploaders, "
          f"<= {args.rows} rows each: {rows['train']:,} train / {rows['dev']:,} dev / {rows['test']:,} test)")
    print()
    print(f"{platform.node()}: {os.cpu_count()} CPU, Python {platform.python_version()}; "
          f"store {task.manifest['store']}")
    print()
    print("| what | seconds | test accuracy [95% CI] | test macro-F1 [95% CI] |")
    print("|---|---:|---:|---:|")
    for label, seconds in timings:
        print(f"| {label} | {seconds:.1f} | | |")
    print(f"| tasks make uploader (store -> CSVs) | {make_seconds:.1f} | | |")
    print(f"| majority class (reference) | 0.0 | {base['accuracy']} | {base['macro_f1']} |")
    for s in report.scores:
        print(f"| {s.model}: linear probe ({s.probe_train_rows:,} train rows encoded + test) | "
              f"{s.probe_seconds:.1f} | {s.probe['accuracy']} | {s.probe['macro_f1']} |")
        print(f"| {s.model}: fine-tune ({s.steps} steps, {s.stopped}) | {s.finetune_seconds:.1f} | "
              f"{s.finetuned['accuracy']} | {s.finetuned['macro_f1']} |")
    print()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tasks eval wall time {eval_seconds:.1f} s (model loads and the HF export included); "
          f"peak RSS {peak:.0f} MiB; load average {os.getloadavg()[0]:.1f}; work dir {work}")


if __name__ == "__main__":
    main()
