"""How a corpus is cut: which sources go to the eval file, and what is trimmed.

The eval split is a function of the source key alone (a hash), so a source
never changes side when the store grows, and a whole live room can be held
out (the study's evaluation set was rooms the model never saw).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from danmaku.store.models import LIVE_BROADCAST, VIDEO_PAGE

KIND_OPTIONS = {"video": VIDEO_PAGE, "live": LIVE_BROADCAST}


@dataclass(frozen=True)
class ExportOptions:
    """How the corpus is cut and trimmed; the defaults reproduce the study.

    Args:
        eval_fraction: share of sources (by a hash of the source key, so a
            source never changes side when the store grows) in the eval file.
        eval_rooms: live rooms whose broadcasts all go to the eval file.
        min_danmaku_per_doc: documents with fewer kept danmaku are left out.
        collapse_repeats: a danmaku equal to the one kept just before it in the
            same document is left out.
        max_chars: danmaku longer than this (characters of the line) are left out.
    """

    eval_fraction: float = 0.0
    eval_rooms: tuple[int, ...] = ()
    min_danmaku_per_doc: int = 1
    collapse_repeats: bool = False
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.min_danmaku_per_doc < 1:
            raise ValueError("min_danmaku_per_doc must be at least 1")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError("max_chars must be positive")

    @property
    def has_eval(self) -> bool:
        return self.eval_fraction > 0 or bool(self.eval_rooms)

    def as_manifest(self) -> dict[str, Any]:
        return {
            "eval_fraction": self.eval_fraction, "eval_rooms": sorted(self.eval_rooms),
            "eval_rule": "int(sha256(source key)[:8 bytes]) / 2**64 < eval_fraction, "
                         "or a live broadcast of eval_rooms",
            "min_danmaku_per_doc": self.min_danmaku_per_doc,
            "collapse_repeats": self.collapse_repeats, "max_chars": self.max_chars,
            "one_line": "tabs and line breaks -> space, strip",
            "vocab_filter": "keep iff Google FullTokenizer(do_lower_case=True) gives >= 1 token, no [UNK]",
            "document_order": "source.id", "danmaku_order": "sent_at_ms, id",
        }


def eval_hash(key: str) -> float:
    """A source key's place in [0, 1): the first 8 bytes of its sha256."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def goes_to_eval(key: str, kind: str, room_id: int | None, options: ExportOptions) -> bool:
    if kind == LIVE_BROADCAST and room_id is not None and room_id in options.eval_rooms:
        return True
    return options.eval_fraction > 0 and eval_hash(key) < options.eval_fraction
