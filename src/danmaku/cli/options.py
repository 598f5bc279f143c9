"""Options that several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL or SQLite file path "
                              "[env: DANMAKU_DATABASE_URL; default ./danmaku.sqlite]"),
]
