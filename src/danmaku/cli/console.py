"""Shared terminal output: one Rich console, progress bars, summary tables."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress_bar(*, transient: bool = False) -> Progress:
    """The progress bar every long danmaku command shows (on stderr; quiet when not a TTY)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


def format_ms(ms: int | None, *, seconds: bool = True) -> str:
    """A UTC unix-ms time as people read it in tables ("-" when unknown)."""
    if ms is None:
        return "-"
    pattern = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(pattern)
