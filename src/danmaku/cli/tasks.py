"""``danmaku tasks ...``: downstream tasks from the store, and one table comparing models on them.

Each command parses options and calls a library function
(``tasks.make.make_task``, ``tasks.evaluate.evaluate_tasks``); user errors are
one red line and exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from danmaku.cli.console import console, progress_bar
from danmaku.cli.corpus import DbOption
from danmaku.cli.finetune import quiet_tf

tasks_app = typer.Typer(
    help="Downstream tasks (which uploader / which live room) from the store; fine-tuned and linear-probe "
    "scores of several models side by side.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(1)


@tasks_app.command("make")
def make_cmd(
    task: Annotated[str, typer.Argument(help="uploader (video danmaku -> uploader) or room (live chat -> "
                                        "room).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Task directory to write.")],
    classes: Annotated[int, typer.Option(min=0, help="The K eligible classes with the most danmaku "
                                         "(0: every eligible one).")] = 10,
    min_per_class: Annotated[int, typer.Option(min=0, help="Classes with fewer stored danmaku are left out "
                                               "(counted before the vocab filter).")] = 100,
    max_per_class: Annotated[int, typer.Option(min=0, help="Rows per class over all splits, a seeded "
                                               "sample (0: every row).")] = 2000,
    only: Annotated[list[int] | None, typer.Option(
        "--only", help="Exactly these classes: uploader mids or room ids (repeatable).")] = None,
    dev: Annotated[float, typer.Option(help="Share of each class's danmaku (by source) for dev.")] = 0.1,
    test: Annotated[float, typer.Option(help="Share for test.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Split and sample seed.")] = 12345,
    vocab: Annotated[Path | None, typer.Option(
        "--vocab", envvar="DANMAKU_VOCAB",
        help="Google BERT vocab.txt: drop the lines the corpus vocab filter drops.")] = None,
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a task made with other settings.")] = False,
) -> None:
    """Labelled CSVs (text,label) split by source into train/dev/test, with sources.csv and a manifest.

    No video page or broadcast is in two splits; the same store and options give the same files.

    Example: danmaku tasks make uploader --out tasks/uploader --classes 8 --max-per-class 2000
    --vocab chinese_L-12_H-768_A-12/vocab.txt
    """
    from danmaku.store.db import make_engine
    from danmaku.tasks.make import TASKS, TaskError, TaskOptions, make_task
    from danmaku.tasks.plan import ClassChoice, PlanError

    if task not in TASKS:
        raise typer.BadParameter(f"must be one of {', '.join(TASKS)}", param_hint="TASK")
    try:
        options = TaskOptions(
            choice=ClassChoice(classes=classes or None, min_per_class=min_per_class, only=tuple(only or ())),
            max_per_class=max_per_class or None, dev_fraction=dev, test_fraction=test, seed=seed)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if vocab is not None and not vocab.is_file():
        raise _fail(f"vocabulary not found: {vocab}")
    if vocab is None:
        console.print("[yellow]note:[/] no --vocab: lines the corpus vocab filter would drop are kept")
    engine = make_engine(db)
    with progress_bar() as progress:
        bar = progress.add_task(f"tasks make {task}", total=None, detail="")

        def on_progress(read: int, total: int) -> None:
            progress.update(bar, completed=read, total=total, detail=f"{read:,} danmaku read")

        try:
            result = make_task(engine, task, out, options=options, vocab=vocab, force=force,
                               on_progress=on_progress)
        except (TaskError, PlanError) as err:
            raise _fail(str(err)) from None
    m = result.manifest
    table = Table(title=f"danmaku tasks make {task} ({len(m['selection']['chosen'])} classes)")
    table.add_column("class" if task == "uploader" else "room", justify="right")
    for split in ("train", "dev", "test"):
        table.add_column(f"{split} rows", justify="right")
        table.add_column(f"{split} sources", justify="right")
    for label in m["selection"]["chosen"]:
        cells = []
        for split in ("train", "dev", "test"):
            cells += [f"{m['counts'][split][label]:,}", f"{m['sources'][split][label]:,}"]
        table.add_row(label, *cells)
    table.add_row("[bold]all[/]", *(cell for split in ("train", "dev", "test")
                                    for cell in (f"[bold]{m['rows'][split]:,}[/]",
                                                 f"{sum(m['sources'][split].values()):,}")))
    console.print(table)
    dropped = ", ".join(f"{n:,} {why}" for why, n in m["dropped"].items() if n) or "none"
    console.print(f"read {m['danmaku_read']:,} danmaku from {m['store']}; left out: {dropped}")
    empty = [f"{label} ({split})" for split in ("train", "dev", "test")
             for label, n in m["counts"][split].items() if not n]
    if empty:
        console.print(f"[yellow]warning:[/] no rows for {', '.join(empty)}")
    console.print(f"wrote {result.out}/{{train,dev,test}}.csv, sources.csv, manifest.json")


@tasks_app.command("eval")
def eval_cmd(
    task_dirs: Annotated[list[Path], typer.Argument(help="Task directories (train.csv, dev.csv, test.csv).")],
    model: Annotated[list[str], typer.Option(
        "--model", "-m", help="NAME=MODEL (repeat: base=chinese_L-12_H-768_A-12 tuned=run/); MODEL is "
        "anything danmaku loads.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Work directory: runs, probe results, "
                                      "eval.json, eval.md.")] = Path("tasks-eval"),
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Fine-tuning batch size.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Fine-tuning peak learning rate.")] = 5e-5,
    max_seq_len: Annotated[int, typer.Option(min=3, help="Tokens per text (fine-tuning and probe).")] = 64,
    patience: Annotated[int, typer.Option(min=0, help="Early-stopping patience (dev scores).")] = 2,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Fine-tuning steps at most.")] = None,
    probe_max_train: Annotated[int, typer.Option(
        min=0, help="Training rows the probe encodes at most (0: all).")] = 20_000,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Fine-tuning, probe sample and bootstrap seed.")] = 12345,
    meme: Annotated[bool, typer.Option("--meme/--no-meme", help="Also the meme score per model.")] = True,
) -> None:
    """Fine-tuned and linear-probe scores of every model on every task, side by side in one table.

    Test accuracy and macro-F1 with bootstrap 95% intervals, the majority-class baseline
    and the meme score; also written to OUT/eval.md and OUT/eval.json.

    Re-running reuses finished fine-tuning runs and probes (and continues interrupted ones).

    Example: danmaku tasks eval -m base=chinese_L-12_H-768_A-12 -m tuned=run/ tasks/uploader tasks/room
    """
    quiet_tf()
    from danmaku.embed.models import ModelError, parse_model_spec
    from danmaku.finetune.data import DataError
    from danmaku.finetune.train import FinetuneError, FinetuneSettings
    from danmaku.tasks.evaluate import (
        HEADER,
        EvalCallbacks,
        EvalError,
        EvalSettings,
        evaluate_tasks,
        markdown_table,
    )

    try:
        specs = [parse_model_spec(m) for m in model]
        settings = EvalSettings(
            finetune=FinetuneSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                      max_seq_len=max_seq_len, patience=patience, seed=seed,
                                      max_steps=max_steps),
            probe_max_train=probe_max_train or None, resamples=resamples, seed=seed, meme=meme)
    except (ModelError, FinetuneError) as err:
        raise typer.BadParameter(str(err)) from err
    with progress_bar(transient=True) as progress:
        current = {"bar": None}

        def begin(what: str, done: int, total: int) -> None:
            if current["bar"] is not None:
                progress.remove_task(current["bar"])
            current["bar"] = progress.add_task(what, total=total, completed=done, detail="")

        def advance(done: int) -> None:
            if current["bar"] is not None:
                progress.update(current["bar"], completed=done)

        callbacks = EvalCallbacks(stage=lambda text: progress.console.print(f"[bold]{text}[/]"),
                                  begin=begin, advance=advance,
                                  notice=lambda text: progress.console.print(f"[yellow]{text}[/]"))
        try:
            report = evaluate_tasks(specs, task_dirs, out, settings, callbacks=callbacks)
        except (EvalError, DataError) as err:
            raise _fail(str(err)) from None
    table = Table(title="danmaku tasks eval (test set; \\[low, high]: bootstrap 95% interval)")
    for column in HEADER:
        table.add_column(column, justify="left" if column in ("task", "model") else "right")
    for row in report.rows():
        table.add_row(*row)
    console.print(table)
    for task in report.tasks:
        console.print(f"{task}: {report.test_rows[task]:,} test rows")
    typer.echo(markdown_table(report))
    console.print(f"written: {out / 'eval.md'}, {out / 'eval.json'}")
