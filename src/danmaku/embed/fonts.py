"""A CJK font for the picture's labels, shipped by a pip package (``mplfonts``).

The study drew Chinese and Japanese phrases with a system font; matplotlib's
default DejaVu Sans has no CJK glyphs and draws empty boxes ("tofu"). The
``mplfonts`` wheel ships Noto Sans CJK SC, which covers simplified and
traditional Han, kana and the punctuation of the meme phrases. We register the
file with matplotlib directly (no copying into matplotlib's data dir, no rc
changes) and can check, with fontTools, that every character of a label has a
glyph before drawing it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

FONT_FILE = "NotoSansCJKsc-Regular.otf"


@functools.cache
def cjk_font_path() -> Path:
    """Path of Noto Sans CJK SC inside the installed ``mplfonts`` package."""
    import mplfonts

    path = Path(mplfonts.__file__).parent / "fonts" / FONT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"mplfonts does not ship {FONT_FILE} any more (looked at {path})")
    return path


@functools.cache
def register_cjk_font() -> str:
    """Add the CJK font to matplotlib's font manager; returns its family name."""
    from matplotlib import font_manager

    path = cjk_font_path()
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


@functools.cache
def _codepoints(path: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as font:
        return frozenset(font.getBestCmap())


def missing_glyphs(texts: Iterable[str], font_path: Path | None = None) -> dict[str, str]:
    """``{text: characters the font cannot draw}`` for texts with at least one (spaces ignored)."""
    cmap = _codepoints(font_path or cjk_font_path())
    out = {}
    for text in texts:
        missing = "".join(sorted({c for c in text if not c.isspace() and ord(c) not in cmap}))
        if missing:
            out[text] = missing
    return out
