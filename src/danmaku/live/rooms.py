"""Room ids as users write them: ``21452505``, ``https://live.bilibili.com/21452505?...``.

A rooms file holds one room per line; ``#`` starts a comment, blank lines are
skipped. A line that names no room is an error with its line number, never
skipped in silence.
"""

from __future__ import annotations

import re
from pathlib import Path

_ROOM = re.compile(r"^(?:(?:https?://)?live\.bilibili\.com/(?:h5/|blanc/)?)?(\d{1,12})(?:[/?#].*)?$")


class RoomsError(ValueError):
    """A room that is not a room id or a live.bilibili.com address."""


def parse_room(text: str) -> int:
    """The room id in ``text`` (a number or a live.bilibili.com URL)."""
    match = _ROOM.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise RoomsError(f"not a room id or https://live.bilibili.com/ID address: {text.strip()!r}")
    return int(match.group(1))


def read_rooms_file(path: Path) -> list[int]:
    """The rooms of a rooms file, in order."""
    rooms = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rooms.append(parse_room(line))
        except RoomsError as error:
            raise RoomsError(f"{path}:{number}: {error}") from None
    return rooms
