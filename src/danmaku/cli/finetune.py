"""``danmaku finetune ...``: fine-tune a classifier from any model the tool loads.

The command parses options and calls ``danmaku.finetune.train.classify``; user
errors are one red line and exit code 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from danmaku.cli.console import console, progress_bar

finetune_app = typer.Typer(
    help="Fine-tune a sequence classifier (keras-hub BertTextClassifier) from a Google dir, run or export; "
    "the result loads in transformers.pipeline.",
    no_args_is_help=True,
)


def quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def metrics_table(title: str, metrics: dict, baseline: dict | None = None) -> Table:
    """Accuracy and macro-F1 per split, with the majority baseline beside them."""
    table = Table(title=title)
    for column in ("split", "rows", "accuracy", "macro-F1", "majority accuracy", "majority macro-F1"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split in ("dev", "test"):
        if split not in metrics:
            continue
        m, b = metrics[split], (baseline or {}).get(split, {})
        table.add_row(split, f"{m['examples']:,}", f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}",
                      f"{b['accuracy']:.4f}" if b else "-", f"{b['macro_f1']:.4f}" if b else "-")
    return table


@finetune_app.command("classify")
def classify_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Google model dir, checkpoint prefix, "
                                       "danmaku pretrain export (Google or HF) or run dir.")],
    train: Annotated[Path, typer.Option(help="Training CSV: text,label (header optional).")],
    dev: Annotated[Path, typer.Option(help="Dev CSV: early stopping and the best weights.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created, or continued).")],
    test: Annotated[Path | None, typer.Option(help="Test CSV, scored once with the best weights.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training rows.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per optimizer step.")] = 32,
    learning_rate: Annotated[float, typer.Option(
        help="Peak learning rate (BERT-Base: 2e-5..5e-5; small models from scratch: ~1e-3).")] = 5e-5,
    warmup: Annotated[float, typer.Option(help="Share of steps warming up.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay.")] = 0.01,
    max_seq_len: Annotated[int, typer.Option(min=3, help="Tokens per text with [CLS] and [SEP].")] = 64,
    dropout: Annotated[float | None, typer.Option(
        help="Dropout before the head (default: the model's hidden dropout).")] = None,
    seed: Annotated[int, typer.Option(help="Head initialisation, dropout and data order.")] = 12345,
    eval_every: Annotated[int, typer.Option(min=0, help="Steps between dev scores (0: every epoch).")] = 0,
    patience: Annotated[int, typer.Option(
        min=0, help="Dev scores without improvement before stopping (0: never).")] = 2,
    monitor: Annotated[str, typer.Option(help="Dev metric to keep the best of: macro_f1 or accuracy.")]
        = "macro_f1",
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    save_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")] = 500,
    max_minutes: Annotated[float | None, typer.Option(
        help="Pause (with a checkpoint) after this many minutes; run again to continue.")] = None,
    ckpt_name: Annotated[str | None, typer.Option(help="Checkpoint of MODEL, e.g. model.ckpt-12000.")] = None,
    tuned_model_dir: Annotated[Path | None, typer.Option(
        help="Weights from here, config and vocab from --model (bert-as-service).")] = None,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="Deterministic TF ops (bit-exact reruns, slower).")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of continuing --out.")] = False,
) -> None:
    """Fine-tune a text classifier, early-stopped on dev; writes OUT/hf and OUT/metrics.json.

    OUT/hf loads with transformers.pipeline("text-classification", model="OUT/hf").
    Re-running the same command continues an interrupted run (or reuses a finished one).

    Example: danmaku finetune classify -m run/ --train task/train.csv --dev task/dev.csv
    --test task/test.csv --out clf/
    """
    quiet_tf()
    from danmaku.finetune.data import DataError
    from danmaku.finetune.train import FinetuneError, FinetuneOptions, FinetuneSettings, classify

    try:
        settings = FinetuneSettings(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_fraction=warmup,
            weight_decay=weight_decay, max_seq_len=max_seq_len, dropout=dropout, seed=seed,
            eval_every=eval_every, patience=patience, monitor=monitor, max_steps=max_steps)
    except FinetuneError as err:
        raise typer.BadParameter(str(err)) from err
    options = FinetuneOptions(save_every=save_every, max_minutes=max_minutes, deterministic=deterministic)
    with progress_bar() as bar:
        task = bar.add_task("fine-tuning", total=None, detail="")

        def on_begin(start: int, total: int) -> None:
            bar.update(task, completed=start, total=total)

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step, detail=f"loss {loss:.3f}")

        def on_eval(step: int, metrics: dict, improved: bool) -> None:
            mark = " [green]best[/]" if improved else ""
            bar.console.print(f"step {step}: dev accuracy {metrics['accuracy']:.4f}, macro-F1 "
                              f"{metrics['macro_f1']:.4f}{mark}")

        try:
            result = classify(model, train, dev, out, test=test, settings=settings, options=options,
                              ckpt_name=ckpt_name, tuned_dir=tuned_model_dir, fresh=fresh,
                              on_begin=on_begin, on_step=on_step, on_eval=on_eval,
                              on_notice=lambda text: bar.console.print(f"[yellow]{text}[/]"))
        except (DataError, FinetuneError) as err:
            console.print(f"[red]error:[/] {err}")
            raise typer.Exit(1) from None
    if not result.finished:
        console.print(f"paused at step {result.step} of {result.total_steps}; "
                      "run the same command to continue")
        return
    metrics = result.metrics
    console.print(metrics_table(f"danmaku finetune classify ({len(metrics['labels'])} classes)", metrics,
                                metrics.get("majority_baseline")))
    how = {"done": "all steps", "early stop": "stopped early"}.get(result.stopped, result.stopped)
    console.print(f"{how}: {result.step} of {result.total_steps} steps, best dev at step "
                  f"{metrics['best_step']}; {metrics['train_seconds']:.0f} s of training")
    console.print(f"classifier: {out / 'hf'} (transformers.pipeline(\"text-classification\", "
                  f"model=\"{out / 'hf'}\")); metrics: {out / 'metrics.json'}")
