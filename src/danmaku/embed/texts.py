"""Input lines -> texts to encode, under one documented rule for empty lines.

Rule: a line is stripped of surrounding whitespace (bert-as-service did the
same); a line that is then empty is *skipped*, counted, and reported with its
line number -- or, with ``strict``, is an error. Output rows therefore follow
the non-empty input lines in order.
Phrase lists (``--phrases``, ``--among``) are read the same way, with
duplicates dropped (a phrase is one point in the picture).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PHRASES = Path(__file__).with_name("meme_phrases.txt")
"""The study's 92 community phrases (the meme picture), shipped with the package."""


class EmptyLineError(ValueError):
    """An empty input line under ``--strict``."""


@dataclass
class LineCounts:
    read: int = 0
    used: int = 0
    empty: int = 0
    empty_lines: list[int] = field(default_factory=list)  # first few, 1-based

    def empty_summary(self, limit: int = 5) -> str:
        shown = ", ".join(map(str, self.empty_lines[:limit]))
        more = f", ... ({self.empty - limit} more)" if self.empty > limit else ""
        return f"line {shown}{more}" if self.empty == 1 else f"lines {shown}{more}"


def iter_texts(
    lines: Iterable[str], counts: LineCounts, *, strict: bool = False
) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for every non-empty line; empty ones counted (or an error)."""
    for number, line in enumerate(lines, start=1):
        counts.read += 1
        text = line.strip()
        if not text:
            if strict:
                raise EmptyLineError(f"line {number} is empty (--strict)")
            counts.empty += 1
            if len(counts.empty_lines) < 20:
                counts.empty_lines.append(number)
            continue
        counts.used += 1
        yield number, text


def read_phrases(path: str | Path) -> list[str]:
    """Non-empty, stripped, de-duplicated lines of a phrase file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"phrase file not found: {path}")
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8") as handle:
        for _, text in iter_texts(handle, LineCounts()):
            seen.setdefault(text, None)
    return list(seen)
