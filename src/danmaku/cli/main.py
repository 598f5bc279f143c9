"""The ``danmaku`` command: one Typer app with a sub-app per pipeline stage.

Each stage owns its sub-app (``corpus/cli.py``, ``pretrain/cli.py``, ...); this
module only assembles them, so ``danmaku --help`` lists the whole pipeline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from danmaku import __version__
from danmaku.cli.console import console
from danmaku.cli.corpus import corpus_app
from danmaku.cli.crawl import crawl_app
from danmaku.cli.db import db_app
from danmaku.cli.embed import embed_app
from danmaku.cli.finetune import finetune_app
from danmaku.cli.imports import import_app
from danmaku.cli.live import live_app
from danmaku.cli.pretrain import pretrain_app
from danmaku.cli.tasks import tasks_app

app = typer.Typer(
    name="danmaku",
    help="Bilibili vtuber danmaku -> corpus -> domain-adapted Chinese BERT -> embeddings.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(import_app, name="import")
app.add_typer(db_app, name="db")
app.add_typer(crawl_app, name="crawl")
app.add_typer(live_app, name="live")
app.add_typer(corpus_app, name="corpus")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(embed_app, name="embed")
app.add_typer(finetune_app, name="finetune")
app.add_typer(tasks_app, name="tasks")


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Where the run goes (store, corpus, model, report).")] = Path(
        "demo/run"),
    minutes: Annotated[float, typer.Option(
        help="Training time budget in minutes: the learning rate decays to 0 there.")] = 15.0,
    data: Annotated[Path, typer.Option(help="The shared sample data directory.")] = Path("../shared/data"),
    steps: Annotated[int, typer.Option(
        help="Optimizer steps at most (the learning-rate schedule ends at the budget or here).")] = 100_000,
    dupe_factor: Annotated[int, typer.Option(help="Passes over the corpus when making instances.")] = 5,
    eval_batches: Annotated[int, typer.Option(
        help="Eval batches of 8 per row of the table (the study: 100).")] = 100,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Start over instead of reusing finished stages.")] = False,
    task_rows: Annotated[int, typer.Option(
        min=10, help="Rows per uploader in the downstream task (8 uploaders).")] = 800,
) -> None:
    """The whole study on the shared sample: import -> corpus -> pretrain -> table, picture, report.

    Re-running reuses finished stages (a killed demo resumes); --fresh starts over.

    Example: danmaku demo --minutes 15 --out demo/run && xdg-open demo/run/report.html
    """
    from danmaku.cli.pretrain import quiet_tensorflow
    from danmaku.demo.pipeline import DemoError, DemoSettings, run_demo

    if minutes <= 0 or steps < 1 or dupe_factor < 1 or eval_batches < 1:
        raise typer.BadParameter("--minutes, --steps, --dupe-factor and --eval-batches must be positive")
    settings = DemoSettings(data=data, out=out, minutes=minutes, steps=steps, dupe_factor=dupe_factor,
                            eval_batches=eval_batches, fresh=fresh, task_rows=task_rows)

    def on_stage(title: str, event: str, seconds: float) -> None:
        if event == "start":
            console.rule(f"[bold]{title}")
        elif event == "reused":
            console.print(f"[green]✓[/] {title} [dim](done before, {seconds:.0f} s; reused)[/]")
        else:
            console.print(f"[green]✓[/] {title} ({seconds:.0f} s)")

    quiet_tensorflow()  # before any stage imports it
    try:
        report = run_demo(settings, on_stage=on_stage, on_message=console.print)
    except DemoError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    console.print(f"[bold green]report:[/] {report} (and {report.with_suffix('.md')})")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"danmaku {__version__}")
        raise typer.Exit()


DEBUG_ENV = "DANMAKU_DEBUG"


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug",
                               help=f"Show the traceback of an error (or set {DEBUG_ENV}=1)."),
) -> None:
    """Bilibili vtuber danmaku -> corpus -> domain-adapted Chinese BERT -> embeddings.

    Example: danmaku demo (the whole study on the sample data), or
    danmaku import csv DIR && danmaku corpus export --vocab vocab.txt
    """
    if debug:
        os.environ[DEBUG_ENV] = "1"


def main() -> None:
    """The console script: any error is one line on stderr and exit code 1 (``--debug``: the traceback).

    Typer re-raises what a command raises; a user's mistake (a missing file, an
    unreachable store, a damaged checkpoint) must read as a sentence, not as a
    stack of frames, so the traceback is kept for ``--debug``.
    """
    try:
        app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as error:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        console.print(f"[red]error:[/] {one_line(error)}", highlight=False)
        console.print("[dim](run with --debug for the traceback)[/]")
        sys.exit(1)


def one_line(error: BaseException) -> str:
    """The error as one line: its message's first line, or its type when it has none."""
    text = str(error).strip()
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    first = text.splitlines()[0] if text else ""
    return first or type(error).__name__
