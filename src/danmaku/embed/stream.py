"""``danmaku embed encode``'s loop: lines in, ``.npy`` rows out, memory flat, resumable.

Lines are read in chunks (``chunk_lines`` texts, many batches each, so that
length-sorting inside a chunk removes most padding); each chunk is encoded and
appended to the ``.npy`` before the next is read. On resume, the rows already
in the file stand for the first non-empty lines, which are skipped unread by
the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from danmaku.embed.encoder import Encoder
from danmaku.embed.npy_stream import NpyAppender

DEFAULT_CHUNK_LINES = 4096


@dataclass
class StreamStats:
    encoded: int = 0
    resumed: int = 0  # rows that were already in the output
    truncated: int = 0


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(items, size)):
        yield chunk


def encode_stream(
    encoder: Encoder,
    texts: Iterable[str],
    out: NpyAppender,
    *,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    on_rows: Callable[[int], None] | None = None,
) -> StreamStats:
    """Encode ``texts`` (non-empty, in order) into ``out``, after the rows it already has."""
    stats = StreamStats(resumed=out.rows)
    items = iter(texts)
    for _ in islice(items, out.rows):  # already encoded by an earlier run
        pass
    if on_rows is not None and out.rows:
        on_rows(out.rows)
    for chunk in _chunks(items, chunk_lines):
        ids, cut = encoder.ids_for_texts(chunk)
        out.append(encoder.encode_ids(ids, on_batch=on_rows))
        stats.encoded += len(chunk)
        stats.truncated += cut
    return stats
