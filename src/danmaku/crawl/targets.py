"""What to crawl: the spider's ``-a`` arguments -> aids and uploader mids.

Accepted forms (comma-separated on the command line, any mix): ``170001``,
``av170001``, ``BV17x411w7KC``. A ``list=`` file holds the study's format (one
Python-style list of aids per line, ``../shared/data/av_data_list.txt``) or one
id per line; blank lines and ``#`` comments are skipped. Every bad entry is
reported with its file and line, before a single request is sent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from danmaku.crawl.bvid import bv_to_av


class TargetError(ValueError):
    """A user-supplied id or list file that cannot be read."""


@dataclass
class Targets:
    """Aids and mids in first-seen order, each once."""

    aids: list[int] = field(default_factory=list)
    mids: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.aids or self.mids)

    def describe(self, limit: int = 200) -> str:
        """A short text for the run row: what this crawl was asked to do."""
        parts = []
        if self.mids:
            more = "..." if len(self.mids) > 20 else ""
            parts.append("mid=" + ",".join(map(str, self.mids[:20])) + more)
        if self.aids:
            parts.append(f"{len(self.aids)} video(s): av" + ",av".join(map(str, self.aids[:10]))
                         + ("..." if len(self.aids) > 10 else ""))
        text = "; ".join(parts)
        return text if len(text) <= limit else text[: limit - 3] + "..."


def video_id(value: str | int) -> int:
    """``'BV17x411w7KC'`` / ``'av170001'`` / ``'170001'`` / ``170001`` -> 170001."""
    if isinstance(value, bool):
        raise TargetError(f"not a video id: {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise TargetError(f"not a video id: {value!r}")
        return value
    text = value.strip()
    if text[:2].upper() == "BV":
        try:
            return bv_to_av(text)
        except ValueError as error:
            raise TargetError(str(error)) from None
    digits = text[2:] if text[:2].lower() == "av" else text
    if not digits.isdigit() or int(digits) <= 0:
        raise TargetError(f"not a video id (want 170001, av170001 or BV...): {value!r}")
    return int(digits)


def user_id(value: str) -> int:
    """An uploader's numeric mid."""
    text = value.strip()
    if not text.isdigit() or int(text) <= 0:
        raise TargetError(f"not an uploader mid (want digits): {value!r}")
    return int(text)


def split_arg(value: str | None) -> list[str]:
    """``'a, b,,c'`` -> ``['a', 'b', 'c']``."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def read_list_file(path: Path) -> Iterator[int]:
    """Aids of a list file: one Python-style list per line, or one id per line."""
    path = Path(path)
    if not path.is_file():
        raise TargetError(f"list file not found: {path}")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                if text.startswith("["):
                    values = ast.literal_eval(text)
                    if not isinstance(values, list):
                        raise TargetError(f"not a list: {text[:60]!r}")
                else:
                    values = [text]
                for value in values:
                    yield video_id(value)
            except (TargetError, ValueError, SyntaxError) as error:
                raise TargetError(f"{path}:{number}: {error}") from None


def _unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))


def parse_targets(*, bvid: str | None = None, aid: str | None = None, mid: str | None = None,
                  list_path: str | None = None) -> Targets:
    """The spider's arguments -> ``Targets``; ``TargetError`` names the bad entry."""
    aids: list[int] = []
    for value in split_arg(bvid):
        if value[:2].upper() != "BV":
            raise TargetError(f"bvid= wants BV ids: {value!r}")
        aids.append(video_id(value))
    aids.extend(video_id(value) for value in split_arg(aid))
    if list_path:
        aids.extend(read_list_file(Path(list_path)))
    mids = [user_id(value) for value in split_arg(mid)]
    return Targets(aids=_unique(aids), mids=_unique(mids))
