"""``danmaku pretrain``: prepare instances, train, evaluate and export BERT (the study's pretraining).

Each command parses options and calls one library function
(``instances.prepare``, ``train.train``, ``evaluate.evaluate``,
``export.export_model``); user errors become a red message and exit code 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from danmaku.artifacts import GOOGLE_CONFIG, VOCAB, RunManifest
from danmaku.cli.console import console, progress_bar

pretrain_app = typer.Typer(
    help="Continued BERT pretraining (masked LM + next sentence) with Google-checkpoint interop.",
    no_args_is_help=True,
)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Known failures -> one red line and exit 1 (no traceback)."""
    from danmaku.pretrain.train import RunError

    try:
        yield
    except (FileNotFoundError, ValueError, RunError, NotADirectoryError) as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None


def quiet_tensorflow() -> None:
    """Import TensorFlow once, without its C++ start-up lines.

    TF 2.21 logs "oneDNN custom operations are on" and, without a GPU, "Could not
    find cuda drivers" through absl before ``absl::InitializeLog`` -- twice, from
    two shared libraries -- when it is first imported; neither
    ``TF_CPP_MIN_LOG_LEVEL`` nor ``ABSL_MIN_LOG_LEVEL``/``GLOG_minloglevel``
    reach them (tried). So the import runs with file descriptor 2 pointed at a
    temporary file, and what it wrote is shown only if the import fails.
    ``TF_CPP_MIN_LOG_LEVEL=3`` (set before) keeps TensorFlow's later C++ logs quiet.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)




@pretrain_app.command()
def prepare(
    corpus: Annotated[Path, typer.Argument(help="Corpus dir (danmaku_text_pure.txt [+ .eval.txt]).")],
    vocab: Annotated[Path, typer.Option("--vocab", help="BERT vocab.txt (Google's Chinese vocabulary).")],
    out: Annotated[Path, typer.Option("--out", help="Instances directory to write.")],
    max_seq_length: Annotated[int, typer.Option(help="Tokens per instance.")] = 128,
    max_predictions_per_seq: Annotated[int, typer.Option(help="Masked positions per instance (max).")] = 20,
    masked_lm_prob: Annotated[float, typer.Option(help="Share of tokens to mask.")] = 0.15,
    short_seq_prob: Annotated[float, typer.Option(help="Share of documents with a shorter target.")] = 0.1,
    dupe_factor: Annotated[int, typer.Option(help="Passes over the corpus (different masks each).")] = 10,
    random_seed: Annotated[int, typer.Option(help="Seed (Google's default).")] = 12345,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per CPU).")] = 0,
    shard_mb: Annotated[float, typer.Option(help="Corpus text per shard, MB (memory per worker).")] = 4.0,
    google_exact: Annotated[bool, typer.Option(
        "--google-exact", help="Reproduce Google's output exactly (one process, in memory).")] = False,
) -> None:
    """Build pretraining instances (TFRecord, Google's layout) from a corpus.

    Example: danmaku pretrain prepare corpus/ --vocab chinese_L-12_H-768_A-12/vocab.txt --out instances/
    """
    from danmaku.pretrain.instances import InstanceOptions
    from danmaku.pretrain.instances import prepare as run_prepare

    with _user_errors():
        opts = InstanceOptions(max_seq_length, max_predictions_per_seq, masked_lm_prob, short_seq_prob,
                               dupe_factor, random_seed)
        if not vocab.is_file():
            raise FileNotFoundError(f"vocabulary not found: {vocab}")
        with progress_bar() as bar:
            task = bar.add_task("preparing", total=None, detail="")

            def progress(split: str, shards: int, stats) -> None:
                bar.update(task, advance=stats.instances, detail=f"{split}: {shards} shard(s)")

            summary = run_prepare(corpus, vocab, out, opts=opts, workers=workers or None,
                                  shard_bytes=int(shard_mb * (1 << 20)), google_exact=google_exact,
                                  progress=progress)
    for split, stats in summary.splits.items():
        console.print(
            f"{split}: {stats.instances:,} instances from {stats.documents:,} documents, "
            f"{stats.lines:,} lines "
            f"({stats.empty_lines:,} without tokens, skipped), {stats.tokens:,} tokens; "
            f"{stats.masked / max(stats.instances, 1):.1f} masked/instance, "
            f"{stats.random_next / max(stats.instances, 1):.1%} random next")
    if summary.shards_reused:
        console.print(f"{summary.shards_reused} shard(s) were already done and kept")
    if summary.shards_rebuilt:
        console.print(f"[yellow]{len(summary.shards_rebuilt)} damaged shard(s) rebuilt: "
                      f"{', '.join(summary.shards_rebuilt)}[/]")
    console.print(f"written to {summary.out_dir}")


@pretrain_app.command("vocab")
def vocab_cmd(
    corpus: Annotated[Path, typer.Argument(help="Corpus dir (its danmaku_text_pure.txt is counted).")],
    vocab: Annotated[Path, typer.Option("--vocab", help="BERT vocab.txt to trim (Google's Chinese one).")],
    out: Annotated[Path, typer.Option("--out", help="vocab.txt to write.")],
    min_count: Annotated[int, typer.Option(
        help="Keep tokens seen at least this often (1: the training file tokenises as before).")] = 1,
    workers: Annotated[int, typer.Option(help="Worker processes (0: one per CPU).")] = 0,
) -> None:
    """Trim a vocabulary to the tokens a corpus's training file uses, for a model trained from scratch.

    The masked-LM head scores every token at every masked position; a model that
    starts from random weights never sees the tokens its corpus lacks. Give the
    result to `prepare --vocab`. Not for --init-checkpoint runs (Google's weights
    are indexed by the full vocabulary).

    Example: danmaku pretrain vocab corpus/ --vocab chinese_L-12_H-768_A-12/vocab.txt --out vocab.txt
    """
    from danmaku.pretrain.vocab_trim import trim_vocab

    with _user_errors():
        if not vocab.is_file():
            raise FileNotFoundError(f"vocabulary not found: {vocab}")
        with progress_bar() as bar:
            task = bar.add_task("counting tokens", total=None, detail="")
            summary = trim_vocab(corpus, vocab, out, min_count=min_count, workers=workers or None,
                                 progress=lambda lines: bar.update(task, completed=lines,
                                                                   detail=f"{lines:,} lines"))
    console.print(f"kept {summary.kept:,} of {summary.source_size:,} tokens "
                  f"({summary.tokens:,} tokens in {summary.lines:,} lines counted, "
                  f"min count {summary.min_count}); "
                  f"written to {summary.path}")


@pretrain_app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory (created, or resumed if it exists).")],
    instances: Annotated[Path | None, typer.Option(help="Instances directory from `prepare`.")] = None,
    init_checkpoint: Annotated[str | None, typer.Option(
        help="Google checkpoint to continue from (prefix or directory).")] = None,
    bert_config: Annotated[Path | None, typer.Option(
        help="bert_config.json (default: beside --init-checkpoint).")] = None,
    preset: Annotated[str | None, typer.Option(help="Fresh model shape: tiny, small, base.")] = None,
    recipe: Annotated[str | None, typer.Option(
        help="Settings bundle: study (batch 2048, 12000 steps, lr 2e-5, 10% warm-up), tiny.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Instances per optimizer step.")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(
        help="Instances per forward pass per device (default: up to 64).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option(
        help="Peak learning rate (default 2e-5 from a checkpoint, 1e-4 from scratch, 1e-3 tiny).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Warm-up steps (default 10%).")] = None,
    fit_minutes: Annotated[float | None, typer.Option(
        help="End the learning-rate decay at this much training time: the total steps are fixed from the "
             "speed of steps 60-160 and kept on resume (--steps caps them).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw (Google's AdamWeightDecay) or lamb.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation, dropout and data order.")] = None,
    initializer_range: Annotated[float | None, typer.Option(
        help="Fresh model: stddev of the initial weights (Google: 0.02; the demo: 0.1).")] = None,
    position_init: Annotated[str | None, typer.Option(
        help="Fresh model: the learnt position table starts random (Google) or sinusoidal.")] = None,
    nsp_weight: Annotated[float | None, typer.Option(
        help="Weight of the next-sentence loss (Google: 1; 0: the masked LM alone, as RoBERTa).")] = None,
    decay_fraction: Annotated[float | None, typer.Option(
        help="Hold the peak rate after the warm-up and decay linearly to 0 over the last F of the steps "
             "(Google: 1, the whole run).")] = None,
    zero_init_layers: Annotated[int | None, typer.Option(
        help="Fresh model: the last N encoder layers start with zero residual-branch outputs "
             "(the demo: 0; bench/quality.py's zero-last: 1).")] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="bf16 or fp16 (default fp32).")] = None,
    xla: Annotated[bool, typer.Option("--xla", help="Compile the step with XLA (GPU/TPU).")] = False,
    strategy: Annotated[str, typer.Option(help="tf.distribute: default, mirrored, tpu.")] = "default",
    tpu: Annotated[str | None, typer.Option(help="TPU name/address for --strategy tpu.")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 1000,
    keep_checkpoints: Annotated[int, typer.Option(help="Checkpoints kept.")] = 3,
    log_every: Annotated[int, typer.Option(help="Log (TensorBoard, progress) every N steps.")] = 10,
    max_minutes: Annotated[float | None, typer.Option(
        help="Stop (with a checkpoint) after this many minutes.")] = None,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="Deterministic TF ops (bit-exact reruns).")] = False,
) -> None:
    """Pretrain with masked LM + next sentence; resumable (run the same command again).

    Examples:
      danmaku pretrain train --instances instances/ --out run/ --preset tiny
      danmaku pretrain train --instances instances/ --out run/ --recipe study
        --init-checkpoint chinese_L-12_H-768_A-12/bert_model.ckpt --mixed-precision bf16 --xla
      danmaku pretrain train --instances instances/ --out run/ --preset tiny --fit-minutes 15 --steps 100000
      danmaku pretrain train --out run/            # resume after a kill or --max-minutes
    """
    quiet_tensorflow()
    from danmaku.pretrain.train import RunOptions, settings_for
    from danmaku.pretrain.train import train as run_train

    with _user_errors():
        options = RunOptions(mixed_precision=mixed_precision, xla=xla, strategy=strategy, tpu=tpu,
                             save_every=save_every, keep_checkpoints=keep_checkpoints, log_every=log_every,
                             max_minutes=max_minutes, deterministic=deterministic)
        resuming = RunManifest.exists(out) and instances is None
        config = settings = None
        if not resuming:
            if instances is None:
                raise typer.BadParameter("--instances is required for a new run")
            config = _model_config(init_checkpoint, bert_config, preset, instances)
            if initializer_range is not None:
                if initializer_range <= 0:
                    raise typer.BadParameter(
                        f"--initializer-range must be positive, got {initializer_range:g}")
                config = replace(config, initializer_range=initializer_range)
            if recipe is None and preset == "tiny" and init_checkpoint is None:
                recipe = "tiny"
            if recipe is None and learning_rate is None and init_checkpoint:
                learning_rate = 2e-5  # Google's suggestion for continuing a released checkpoint
            settings = settings_for(recipe, batch_size=batch_size, micro_batch_size=micro_batch_size,
                                    steps=steps, learning_rate=learning_rate, warmup_steps=warmup_steps,
                                    optimizer=optimizer, seed=seed, fit_minutes=fit_minutes,
                                    position_init=position_init, nsp_weight=nsp_weight,
                                    zero_init_layers=zero_init_layers, decay_fraction=decay_fraction)
        with progress_bar() as bar:
            task = bar.add_task("pretraining", total=None, detail="")

            def on_begin(start: int, total: int) -> None:
                bar.update(task, total=total, completed=start)

            def on_step(step: int, row: dict[str, float]) -> None:
                bar.update(task, completed=step, detail=(
                    f"loss {row['loss']:.3f} mlm_acc {row['masked_lm_accuracy']:.3f} "
                    f"nsp_acc {row['next_sentence_accuracy']:.3f} {row['sequences_per_second']:.1f} seq/s"))

            result = run_train(out, instances_dir=None if resuming else instances, config=config,
                               settings=settings, options=options, init_checkpoint=init_checkpoint,
                               on_begin=on_begin, on_step=on_step,
                               on_notice=lambda text: console.print(f"[yellow]{text}[/]"))
    if result.stopped == "time budget":
        console.print(f"time budget of {max_minutes:g} min reached at step {result.step}; "
                      "run the same command again to continue")
    if result.history:
        last = result.history[-1]
        console.print(f"step {result.step}: loss {last['loss']:.4f}, masked_lm_accuracy "
                      f"{last['masked_lm_accuracy']:.4f}, next_sentence_accuracy "
                      f"{last['next_sentence_accuracy']:.4f}, {last['sequences_per_second']:.1f} seq/s")
    state = "finished" if result.stopped == "done" else "paused (time budget)"
    console.print(f"{state} at step {result.step} (started at {result.resumed_from}); "
                  f"run dir {result.run_dir}")


def _model_config(init_checkpoint: str | None, bert_config: Path | None, preset: str | None,
                  instances: Path | None = None):
    """A preset takes its vocabulary size from the instances (a trimmed vocabulary: ``pretrain vocab``)."""
    from danmaku.pretrain.config import BertConfig
    from danmaku.pretrain.loading import vocab_size_of

    if bert_config is not None:
        return BertConfig.from_json_file(bert_config)
    if init_checkpoint:
        path = Path(init_checkpoint)
        beside = (path if path.is_dir() else path.parent) / GOOGLE_CONFIG
        if beside.is_file():
            return BertConfig.from_json_file(beside)
        raise FileNotFoundError(f"no bert_config.json beside {init_checkpoint}; pass --bert-config")
    if preset:
        vocab = None if instances is None else Path(instances) / VOCAB
        if vocab is not None and vocab.is_file():
            return BertConfig.preset(preset, vocab_size_of(vocab))
        return BertConfig.preset(preset)
    raise typer.BadParameter("give --preset, --bert-config or --init-checkpoint")


@pretrain_app.command("eval")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Run/export/Google dir or checkpoint.")],
    instances: Annotated[Path, typer.Option("--instances", help="Instances directory (train/eval splits).")],
    ckpt_name: Annotated[str | None, typer.Option(
        help="Checkpoint to load (e.g. model.ckpt-12000, ckpt-3).")] = None,
    tuned_dir: Annotated[Path | None, typer.Option(
        help="Weights from here, config/vocab from MODEL (bert-as-service).")] = None,
    batch_size: Annotated[int, typer.Option(help="Eval batch size (Google's default 8).")] = 8,
    max_steps: Annotated[int, typer.Option(help="Eval batches per split (Google's 100; 0 = all).")] = 100,
    label: Annotated[str | None, typer.Option(help="Row label in the table (default: model name).")] = None,
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="Corpus dir the instances were made from: add the bigram count reference's "
        "rows (same instances and masked positions).")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="JSON output (default: RUN_DIR/eval-step-N.json, else ./eval-NAME.json).")] = None,
) -> None:
    """Google's masked_lm/next_sentence accuracy and loss on train and eval instances.

    With --reference CORPUS, a count model of CORPUS's training file (a masked token
    from how often it follows its left and precedes its right neighbour, smoothed)
    is scored on the same masked positions: what training has to beat.

    Example: danmaku pretrain eval run/ --instances instances/      (the "after" rows)
             danmaku pretrain eval chinese_L-12_H-768_A-12 --instances instances/   (the "before" row)
             danmaku pretrain eval run/ --instances instances/ --reference corpora/demo/VERSION
    """
    quiet_tensorflow()
    from danmaku.pretrain.evaluate import evaluate, table, write_json
    from danmaku.pretrain.loading import load_bert

    with _user_errors():
        if reference is not None:  # a wrong corpus fails before the model is loaded
            from danmaku.pretrain.data import open_instances
            from danmaku.pretrain.reference import training_file

            training_file(reference, open_instances(instances))
        bert = load_bert(model, ckpt_name=ckpt_name, tuned_dir=tuned_dir)
        rows = evaluate(bert, instances, batch_size=batch_size, max_steps=max_steps or None)
        name = label or (tuned_dir or model).name
        step = f"-step-{bert.step}" if bert.step is not None else ""
        home = Path(tuned_dir or model)
        # a run dir keeps its evals; other models may be read-only: the current directory
        target = json_out or (home / f"eval{step}.json" if RunManifest.exists(home)
                              else Path(f"eval-{name}{step}.json"))
        ref_rows = None
        if reference is not None:
            from danmaku.pretrain.reference import reference_metrics

            with progress_bar() as bar:
                task = bar.add_task("counting bigrams", total=None, detail="")
                ref = reference_metrics(
                    reference, instances, batch_size=batch_size, max_steps=max_steps or None,
                    progress=lambda lines: bar.update(task, completed=lines, detail=f"{lines:,} lines"))
            ref_rows = ref.rows
        extra = {"reference": {"corpus": str(reference), "rows": ref_rows}} if ref_rows else {}
        write_json(target, bert.source, rows, step=bert.step, batch_size=batch_size, max_steps=max_steps,
                   **extra)
    typer.echo(table(rows, name, ref_rows))
    console.print(f"metrics written to {target}")


@pretrain_app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run dir (or any model load_bert reads).")],
    fmt: Annotated[str, typer.Option("--format", help="google, hf or sentence-transformers.")] = "google",
    out: Annotated[Path | None, typer.Option(help="Output dir (RUN_DIR/export-FORMAT).")] = None,
    ckpt_name: Annotated[str | None, typer.Option(help="Checkpoint to export (default: newest).")] = None,
    instances: Annotated[Path | None, typer.Option(
        help="Instances to measure the model card's four metrics on (default: the run's).")] = None,
    eval_steps: Annotated[int, typer.Option(
        help="Eval batches of 8 per split for the card (Google's 100; 0 = every instance).")] = 100,
    measure: Annotated[bool, typer.Option(
        "--measure/--no-measure", help="Measure the card's metrics and meme score (else provenance only).")
    ] = True,
    max_seq_len: Annotated[int, typer.Option(
        "--max-seq-len", min=2, help="sentence-transformers: max_seq_length, counting [CLS] and [SEP] "
        "(embed encode's default).")] = 32,
    base_model: Annotated[str | None, typer.Option(
        help="Hub id of the base model for the card (default: google-bert/bert-base-chinese when the run "
        "continued chinese_L-12_H-768_A-12).")] = None,
    license_: Annotated[str, typer.Option("--license", help="License id for the card.")] = "apache-2.0",
) -> None:
    """Export a trained model for bert-as-service / Google tools (google), transformers (hf) or
    sentence-transformers, with a model card (README.md).

    Example: danmaku pretrain export run/ --format sentence-transformers --out danmaku-st/
             danmaku pretrain export run/ --format google --out tuned/
             bert-serving-start -model_dir chinese_L-12_H-768_A-12 -tuned_model_dir tuned/
               -ckpt_name model.ckpt-12000
    """
    quiet_tensorflow()
    from danmaku.pretrain.export import FORMATS, export_model
    from danmaku.pretrain.loading import load_bert
    from danmaku.pretrain.model_card import gather

    with _user_errors():
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        if instances is not None and not instances.is_dir():
            raise FileNotFoundError(f"instances directory not found: {instances}")
        with console.status(f"loading {run_dir}") as status:
            bert = load_bert(run_dir, ckpt_name=ckpt_name)
            target = out or run_dir / f"export-{fmt}"
            card = gather(bert, fmt=fmt, name=target.resolve().name, model_path=run_dir,
                          instances_dir=instances, measure=measure, eval_steps=eval_steps or None,
                          base_model=base_model,
                          license=license_, max_seq_length=max_seq_len,
                          on_stage=lambda stage: status.update(f"{stage} ({bert.source})"))
            status.update(f"writing {target}")
            written = export_model(bert, target, fmt=fmt, card=card, max_seq_length=max_seq_len)
    for note in card.notes:
        console.print(f"[yellow]note:[/] {note}")
    if measure and card.evaluation is None:
        console.print(f"[yellow]note:[/] model card without the four metrics: {card.evaluation_note}")
    if card.meme is not None:
        console.print(f"meme score (group MRR): {card.meme['mrr']:.3f} (chance {card.meme['chance']:.3f})")
    console.print(f"exported {bert.source} -> {written} (model card: {Path(target) / 'README.md'})")
