"""A danmaku as one corpus line: every line break and tab becomes a space.

Any line reader (Google's, Python's, HF datasets') must see one danmaku as one
line; the vocabulary filter then decides on exactly that line, as
pretraining will see it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

# Every character ``str.splitlines`` breaks at, and the tab.
_LINE_BREAKS = re.compile("[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class ExportError(RuntimeError):
    """A user-facing problem (empty selection, existing output, ...): no traceback."""


def one_line(text: str) -> str:
    """The text as one line: line breaks and tabs become spaces, ends stripped."""
    return _LINE_BREAKS.sub(" ", text.strip())


def one_line_batch(texts: list[str]) -> list[str]:
    """``one_line`` of each text; only texts with an inner break pay for the regex."""
    lines = list(map(str.strip, texts))
    joined = "\x00".join(lines)
    if _LINE_BREAKS.search(joined) is None:
        return lines
    ends = list(accumulate(map((1).__add__, map(len, lines))))  # one past each separator
    for i in {bisect_right(ends, m.start()) for m in _LINE_BREAKS.finditer(joined)}:
        lines[i] = _LINE_BREAKS.sub(" ", lines[i])
    return lines
