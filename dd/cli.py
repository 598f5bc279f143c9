"""The ``dd`` command: one Typer app with a sub-app per pipeline stage.

Each stage owns its sub-app (``corpus/cli.py``, ``pretrain/cli.py``, ...); this
module only assembles them, so ``dd --help`` lists the whole pipeline.
"""

from __future__ import annotations

import typer

from corpus.cli import corpus_app, db_app, import_app
from crawler.cli import crawl_app
from dd import __version__
from embed.cli import embed_app
from pretrain.cli import pretrain_app

app = typer.Typer(
    name="dd",
    help="Bilibili vtuber danmaku -> corpus -> domain-adapted Chinese BERT -> embeddings.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(import_app, name="import")
app.add_typer(db_app, name="db")
app.add_typer(crawl_app, name="crawl")
app.add_typer(corpus_app, name="corpus")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(embed_app, name="embed")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Bilibili vtuber danmaku -> corpus -> domain-adapted Chinese BERT -> embeddings."""


def main() -> None:
    app()
