"""The study's vocab filter: keep a danmaku iff Google's tokenizer gives it no [UNK].

The rule (``../shared/docs/seed.md``): a text is kept iff Google BERT's
``FullTokenizer`` (do_lower_case=True, the given vocab) turns it into at least one
token and none of them is ``[UNK]``. Google's code is the reference
(``tests/test_export_filter.py`` compares every decision on a large real sample).

Why this is not just ``BertTokenizer`` in batches: the Google-exact tokenizer
(``corpus/tokenizer.py``) costs ~15 us per text (Python cleaning + HF
``encode_batch`` building Encoding objects), so it alone would cap the export
near 60 k danmaku/s. Measured on the 2.8 M danmaku of the shared sample,
decisions come from three tiers, cheapest first:

1. **solo path** (70% of danmaku): every character is whitespace, a character
   Google deletes, or a CJK ideograph / punctuation mark that is itself a vocab
   token. Google isolates each such character as one token, so the text is kept
   iff it has one of them. One ``re.fullmatch`` (~0.3 us).
2. **word path** (most of the rest: ``awsl``, ``tql``, ``233``, kana): solo
   characters plus runs of *word* characters whose lowercase is one character
   that accents-stripping, punctuation splitting and CJK spacing leave alone.
   Google's tokens are then the solo characters plus WordPiece of each lowered
   run, so only the runs need WordPiece; their verdicts are cached by run
   (runs repeat far more than texts do).
3. **sure drop**: a character that no tokenization can cover -- a solo
   character missing from the vocab, or an unchanged word character that occurs
   in no vocab token (emoji, unassigned code points) -- makes an [UNK]
   whatever surrounds it.

Everything else (texts with zero-width characters inside words, combining marks,
final sigma, compatibility ideographs, ...) goes to ``BertTokenizer.ids_batch``.
Each character's class is derived from Python's ``unicodedata`` -- the tables
Google's code uses -- so the tiers agree with the reference by construction;
the equivalence test checks that claim on real and fuzzed text.

A cache of whole-text decisions was measured and left out of this module: the
export keeps one (59% of danmaku texts repeat), see ``corpus/export.py``.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import compress
from operator import not_
from pathlib import Path

from corpus.tokenizer import MAX_INPUT_CHARS_PER_WORD, BertTokenizer, load_vocab

KEEP = 0
UNK = 1
NO_TOKENS = 2
REASONS = {UNK: "unk", NO_TOKENS: "no_tokens"}
"""Drop reasons as they appear in the manifest."""


def is_chinese_char(cp: int) -> bool:
    """Google's ``_is_chinese_char``: the CJK ideograph blocks it isolates."""
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


def is_punctuation(ch: str) -> bool:
    """Google's ``_is_punctuation``: ASCII non-alphanumerics and Unicode P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _deleted(ch: str, cat: str) -> bool:
    # Google's _clean_text: NUL, U+FFFD and Cc/Cf (except \t\n\r) vanish.
    return ch == "\x00" or ch == "\ufffd" or (cat in ("Cc", "Cf") and ch not in "\t\n\r")


def _unchanged(ch: str) -> bool:
    """Lowercasing and accent stripping leave ``ch`` as it is, wherever it stands.

    ``str.lower`` maps character by character except the final sigma; NFD never
    moves a character of combining class 0 nor merges it with a neighbour.
    """
    return (
        ch.lower() == ch and unicodedata.normalize("NFD", ch) == ch
        and unicodedata.combining(ch) == 0 and unicodedata.category(ch) != "Mn"
    )


def _char_class(chars: Iterable[str]) -> str:
    """A regex character class (ranges merged) matching exactly ``chars``."""
    points = sorted({ord(c) for c in chars})
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        a, b = re.escape(chr(points[i])), re.escape(chr(points[j]))
        parts.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "".join(parts)


class _Tables:
    """Compiled character classes for one vocabulary (built once per vocab file)."""

    def __init__(self, vocab: set[str]) -> None:
        vocab_chars = set("".join(vocab))
        deleted: list[str] = []     # Google deletes it (so it may join two words)
        space: list[str] = []       # a word boundary
        solo: list[str] = []        # its own token, in the vocab
        word: list[str] = []        # part of a word; lowercases to one plain char
        not_sure_drop: list[str] = []  # complement of "surely [UNK]"
        category = unicodedata.category
        for cp in range(sys.maxunicode + 1):
            ch = chr(cp)
            cat = category(ch)
            if (cat == "Cn" or cat == "Co") and ch not in vocab_chars:
                # Unassigned / private use: Google keeps it inside a word -> [UNK].
                # (The quick exit matters: these are 90% of all code points.)
                continue
            if cat == "Cs":
                not_sure_drop.append(ch)
                continue
            if _deleted(ch, cat):
                deleted.append(ch)
                not_sure_drop.append(ch)
                continue
            if ch in " \t\n\r" or cat == "Zs" or ch.isspace():
                # (Zl/Zp are not Google whitespace, but its final str.split() splits there.)
                space.append(ch)
                not_sure_drop.append(ch)
                continue
            if is_chinese_char(cp) or is_punctuation(ch):
                if _unchanged(ch):
                    if ch in vocab:
                        solo.append(ch)
                        not_sure_drop.append(ch)
                else:
                    not_sure_drop.append(ch)
                continue
            if _unchanged(ch) and ch not in vocab_chars:
                continue  # a word character no vocab token contains -> [UNK]
            not_sure_drop.append(ch)
            low = ch.lower()
            if (
                ch != "\u03a3" and cat != "Mn" and len(low) == 1 and _unchanged(low)
                and not is_punctuation(low) and not is_chinese_char(ord(low)) and not low.isspace()
            ):
                word.append(ch)
        # A "run" is a maximal stretch of characters that are neither whitespace
        # nor an in-vocab solo character: a word, or something to look at closer.
        self.runs = re.compile(f"[^{_char_class(space + solo)}]+")
        self.blank = re.compile(f"[{_char_class(space + deleted)}]*")
        self.word_run = re.compile(f"[{_char_class(word)}]+")
        self.deleted_run = re.compile(f"[{_char_class(deleted)}]+")
        self.sure_drop = re.compile(f"[^{_char_class(not_sure_drop)}]")


@functools.cache
def _tables(vocab: frozenset[str]) -> _Tables:
    return _Tables(set(vocab))


# What one run means for its text.
_RUN_WORD = 0       # a word WordPiece covers: tokens, no [UNK]
_RUN_UNK = 1        # surely an [UNK]
_RUN_HARD = 2       # ask the full tokenizer
_RUN_DELETED = 3    # only characters Google deletes: no token, joins nothing


class VocabFilter:
    """Keep/drop decisions identical to Google's ``FullTokenizer`` (do_lower_case=True).

    Args:
        vocab_path: a BERT ``vocab.txt`` (Google's Chinese one for the study).
        cache_limit: most runs (words) whose verdict is remembered; the cache is
            emptied when full, so memory stays bounded on any corpus.

    Example:
        >>> f = VocabFilter("vocab.txt")
        >>> f.decide_batch(["草", "awsl", "🤣", " "])
        [0, 0, 1, 2]
    """

    def __init__(self, vocab_path: str | Path, cache_limit: int = 200_000) -> None:
        self.tokenizer = BertTokenizer(vocab_path, do_lower_case=True)
        self.vocab = frozenset(self.tokenizer.vocab)
        self.tables = _tables(self.vocab)
        self.cache_limit = cache_limit
        self._runs: dict[str, int] = {}
        self.tier_counts = {"texts": 0, "with_runs": 0, "tokenizer": 0}

    def wordpiece_ok(self, word: str) -> bool:
        """Google's greedy longest-match-first WordPiece gives no [UNK] for ``word``."""
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return False
        vocab = self.vocab
        start, n = 0, len(word)
        while start < n:
            end = n
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                return False
            start = end
        return True

    def run_verdict(self, run: str) -> int:
        """What a run (a maximal stretch without whitespace or in-vocab solo chars) means."""
        t = self.tables
        if t.word_run.fullmatch(run):
            # Word characters lowercase one to one and nothing else touches them.
            return _RUN_WORD if self.wordpiece_ok(run.lower()) else _RUN_UNK
        if t.sure_drop.search(run):
            return _RUN_UNK
        if t.deleted_run.fullmatch(run):
            return _RUN_DELETED
        return _RUN_HARD

    def decide(self, text: str) -> int:
        return self.decide_batch([text])[0]

    def decide_batch(self, texts: Sequence[str]) -> list[int]:
        """KEEP, UNK or NO_TOKENS for each text; one tokenizer batch for the hard ones.

        C-level passes (``map`` of compiled regexes, ``compress``) sort out the
        texts made of whitespace and solo characters only; Python looks at the
        runs of the others, with their verdicts cached by run.
        """
        n = len(texts)
        out = [KEEP] * n
        for i in compress(range(n), map(not_, texts)):
            out[i] = NO_TOKENS
        for i in compress(range(n), map(str.isspace, texts)):
            out[i] = NO_TOKENS
        t = self.tables
        runs_of, blank = t.runs.findall, t.blank.fullmatch
        cache, verdict = self._runs, self.run_verdict
        if len(cache) > self.cache_limit:
            cache.clear()
        hard: list[int] = []
        with_runs = list(compress(range(n), map(t.runs.search, texts)))
        for i in with_runs:
            worst = _RUN_DELETED
            for run in runs_of(texts[i]):
                v = cache.get(run)
                if v is None:
                    v = cache[run] = verdict(run)
                if v == _RUN_UNK:
                    worst = _RUN_UNK
                    break
                if v == _RUN_HARD or (v == _RUN_WORD and worst == _RUN_DELETED):
                    worst = v
            if worst == _RUN_UNK:
                out[i] = UNK
            elif worst == _RUN_HARD:
                hard.append(i)
            elif worst == _RUN_DELETED and blank(texts[i]):
                out[i] = NO_TOKENS
        counts = self.tier_counts
        counts["texts"] += n
        counts["with_runs"] += len(with_runs) - len(hard)
        if hard:
            counts["tokenizer"] += len(hard)
            unk_id = self.tokenizer.unk_id
            for i, ids in zip(hard, self.tokenizer.ids_batch([texts[i] for i in hard]), strict=True):
                out[i] = NO_TOKENS if not ids else UNK if unk_id in ids else KEEP
        return out


def vocab_tokens(vocab_path: str | Path) -> list[str]:
    """The vocab as Google reads it (for hashing and counting)."""
    return load_vocab(vocab_path)
