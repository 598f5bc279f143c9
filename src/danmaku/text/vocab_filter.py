"""The study's vocab filter: keep a danmaku iff Google's tokenizer gives it no [UNK].

The rule (``../shared/docs/seed.md``): a text is kept iff Google BERT's
``FullTokenizer`` (do_lower_case=True, the given vocab) turns it into at least one
token and none of them is ``[UNK]``. Google's code is the reference
(``tests/text/test_vocab_filter.py`` compares every decision on a large real sample,
on fuzzed text and on a vocab built to trip up shortcuts).

Why not just ``BertTokenizer`` in batches: the Google-exact tokenizer
(``corpus/tokenizer.py``) costs ~15 us per text (Python cleaning, HF Encoding
objects), which alone would cap an export near 60 k danmaku/s. Instead every
character gets a class from a table built once per vocab with Python's
``unicodedata`` (the tables Google's code uses), and a text's *worst* class
decides its path (shares of the 2.8 M danmaku of the shared sample):

* SPACE/SOLO only (70%): whitespace and CJK ideographs / punctuation that are
  vocab tokens themselves. Google isolates each such character as a token, so
  the text is kept iff it has one.
* WORD (28%: ``awsl``, ``tql``, ``233``, kana, hangul, zero-width marks):
  plus runs of characters whose ``google_form`` -- deleted, or lowercased and
  stripped of accents: ``A`` -> ``a``, ``が`` -> ``か``, ``\u200b`` -> "" -- is
  the same wherever they stand and is left alone by punctuation splitting and
  CJK spacing. Google's tokens are then the solo characters plus WordPiece of
  each run's form: only runs need WordPiece, and their verdicts are cached by
  run (68 k distinct runs in 1.1 M).
* DROP (2.4%): a character no tokenization can cover -- a solo character
  missing from the vocab, or an unchanged word character found in no vocab
  token (emoji, unassigned code points) -- is an [UNK] whatever surrounds it.
* HARD (650 of 2.8 M: final sigma, compatibility ideographs, punctuation that
  NFD changes, ...): ``BertTokenizer.ids_batch``.

The classes of a whole batch are one numpy gather over its code points (the
batch joined by newlines, which are whitespace to Google) and the worst class
per text one ``maximum.reduceat``. Measured on the 2.8 M danmaku (CPU seconds,
same process): a regex per text 1.55, one regex pass over the joined batch 2.0
(sre pays per position), this 0.9. A cache of whole-text decisions did not pay
(see ``danmaku/corpus/documents.py``).
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Sequence
from itertools import compress, repeat
from operator import is_
from pathlib import Path

import numpy as np

from danmaku.text.tokenizer import (
    MAX_INPUT_CHARS_PER_WORD,
    BertTokenizer,
    google_clean,
    is_chinese_char,
)

KEEP = 0
UNK = 1
NO_TOKENS = 2
REASONS = {UNK: "unk", NO_TOKENS: "no_tokens"}
"""Drop reasons as they appear in the manifest."""

# Character classes, in the order in which a text's worst one decides its path.
SPACE = 0  # whitespace to Google (or to its final str.split): a word boundary
SOLO = 1   # isolated by Google (CJK ideograph, punctuation) and a vocab token
WORD = 2   # inside a word, which it turns into the same ``google_form`` wherever it stands
HARD = 3   # anything else that might still be covered: ask the tokenizer
DROP = 4   # surely an [UNK] wherever it stands


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


class _Tables:
    """The class of every code point for one vocabulary (built once per process)."""

    def __init__(self, vocab: frozenset[str]) -> None:
        vocab_chars = set("".join(vocab))
        found: dict[int, list[int]] = {cls: [] for cls in (SPACE, SOLO, WORD, HARD, DROP)}
        self.forms: dict[int, str] = {}  # word characters' forms, where not the character
        category = unicodedata.category
        for cp in range(sys.maxunicode + 1):
            ch = chr(cp)
            cat = category(ch)
            if (cat == "Cn" or cat == "Co") and ch not in vocab_chars:
                # Unassigned / private use: Google keeps it inside a word -> [UNK].
                # (The quick exit matters: these are 90% of all code points.)
                continue
            cls = self._classify(ch, cat, vocab, vocab_chars)
            found[cls].append(cp)
            if cls == WORD and (form := google_form(ch)) != ch:
                self.forms[cp] = form
        self.classes = np.full(sys.maxunicode + 1, DROP, dtype=np.uint8)
        for cls, points in found.items():
            self.classes[np.array(points, dtype=np.int64)] = cls

    @staticmethod
    def _classify(ch: str, cat: str, vocab: frozenset[str], vocab_chars: set[str]) -> int:
        if _deleted(ch, cat):
            return WORD  # its form is "": deleted, it joins its neighbours (as Google does)
        if ch in " \t\n\r" or cat == "Zs" or ch.isspace():
            # (Zl/Zp are not Google whitespace, but its final str.split() splits there.)
            return SPACE
        if is_chinese_char(ord(ch)) or is_punctuation(ch):
            if not _unchanged(ch):
                return HARD
            return SOLO if ch in vocab else DROP
        if _unchanged(ch) and ch not in vocab_chars:
            return DROP  # a word character no vocab token contains
        return HARD if ch == "\u03a3" or google_form(ch) is None else WORD  # (Σ: final sigma)


def google_form(ch: str) -> str | None:
    """What Google makes of ``ch`` inside a word, if that is the same wherever it stands.

    Deleted by ``_clean_text``: "". Otherwise lowercased, NFD-decomposed, stripped
    of Mn marks (possibly to ""), provided every character left is one that later
    steps keep in the word as it is (no punctuation, whitespace or CJK, combining
    class 0 so NFD's reordering cannot move it). None when that does not hold.
    """
    cat = unicodedata.category(ch)
    if _deleted(ch, cat):
        return ""
    if cat == "Cs":
        return None
    form = "".join(c for c in unicodedata.normalize("NFD", ch.lower()) if unicodedata.category(c) != "Mn")
    plain = all(
        _unchanged(c) and not is_punctuation(c) and not is_chinese_char(ord(c)) and not c.isspace()
        for c in form
    )
    return form if plain else None


@functools.cache
def _tables(vocab: frozenset[str]) -> _Tables:
    return _Tables(vocab)


# What a run of word characters gives (only the first is falsy: most runs are words).
_RUN_TOKENS = 0  # tokens, none [UNK]
_RUN_UNK = 1
_RUN_EMPTY = 2   # its form is empty: no token


class VocabFilter:
    """Keep/drop decisions identical to Google's ``FullTokenizer`` (do_lower_case=True).

    Args:
        vocab_path: a BERT ``vocab.txt`` (Google's Chinese one for the study).
        cache_limit: most word runs whose verdict is remembered; the cache is
            emptied when full, so memory stays bounded on any corpus.

    Example:
        >>> f = VocabFilter("vocab.txt")
        >>> f.decide_batch(["草", "awsl", "🤣", " "])
        [0, 0, 1, 2]
    """

    def __init__(self, vocab_path: str | Path, cache_limit: int = 200_000) -> None:
        self.tokenizer = BertTokenizer(vocab_path, do_lower_case=True)
        self.vocab = frozenset(self.tokenizer.vocab)
        tables = _tables(self.vocab)
        self.classes, self.forms = tables.classes, tables.forms
        self._longest = max(len(t[2:] if t.startswith("##") else t) for t in self.vocab)
        google_clean("")  # builds its table now (once per process, before any fork)
        self.cache_limit = cache_limit
        self._runs: dict[str, bool] = {}
        self.tier_counts = {"solo": 0, "word": 0, "drop": 0, "tokenizer": 0}

    def wordpiece_ok(self, word: str) -> bool:
        """Google's greedy longest-match-first WordPiece gives no [UNK] for ``word``."""
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return False
        vocab = self.vocab
        start, n = 0, len(word)
        while start < n:
            end = min(n, start + self._longest)  # no longer piece can match
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                return False
            start = end
        return True

    def decide(self, text: str) -> int:
        return self.decide_batch([text])[0]

    def decide_batch(self, texts: Sequence[str]) -> list[int]:
        """KEEP, UNK or NO_TOKENS for each text; one tokenizer batch for the hard ones."""
        n = len(texts)
        if not n:
            return []
        joined = "\n".join(texts) + "\n"
        if joined.count("\n") != n:
            # A newline inside a text is whitespace to Google, like the separator.
            texts = [text.replace("\n", " ") for text in texts]
            joined = "\n".join(texts) + "\n"
        points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        classes = self.classes[points]
        spans = np.fromiter(map(len, texts), dtype=np.int64, count=n) + 1  # with its "\n"
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(spans[:-1], out=starts[1:])
        worst = np.maximum.reduceat(classes, starts)
        out = np.zeros(n, dtype=np.int8)  # KEEP
        out[worst == SPACE] = NO_TOKENS
        out[worst == DROP] = UNK
        words = worst == WORD
        if words.any():
            self._word_runs(joined, classes, np.repeat(words, spans), starts, spans, out)
        hard = np.flatnonzero(worst == HARD).tolist()
        counts = self.tier_counts
        counts["solo"] += int(np.count_nonzero(worst <= SOLO))
        counts["word"] += int(np.count_nonzero(words))
        counts["drop"] += int(np.count_nonzero(worst == DROP))
        if hard:
            counts["tokenizer"] += len(hard)
            unk_id = self.tokenizer.unk_id
            for i, ids in zip(hard, self.tokenizer.ids_batch([texts[i] for i in hard]), strict=True):
                out[i] = NO_TOKENS if not ids else UNK if unk_id in ids else KEEP
        return out.tolist()

    def run_verdict(self, run: str) -> int:
        """_RUN_TOKENS, _RUN_UNK or _RUN_EMPTY for a run of word characters."""
        form = run.translate(self.forms)
        if not form:
            return _RUN_EMPTY
        return _RUN_TOKENS if self.wordpiece_ok(form) else _RUN_UNK

    def _word_runs(self, joined: str, classes: np.ndarray, in_word_texts: np.ndarray,
                   starts: np.ndarray, spans: np.ndarray, out: np.ndarray) -> None:
        """Decide the texts made of SPACE, SOLO and WORD characters only, by their runs."""
        is_word = ((classes == WORD) & in_word_texts).view(np.int8)
        edges = np.diff(is_word, prepend=np.int8(0), append=np.int8(0))
        run_starts = np.flatnonzero(edges == 1)
        run_ends = np.flatnonzero(edges == -1)
        runs = list(map(joined.__getitem__, map(slice, run_starts.tolist(), run_ends.tolist())))
        cache = self._runs
        if len(cache) > self.cache_limit:
            cache.clear()
        verdicts = list(map(cache.get, runs))
        for k in compress(range(len(runs)), map(is_, verdicts, repeat(None))):
            run = runs[k]
            verdict = cache.get(run)
            if verdict is None:
                verdict = cache[run] = self.run_verdict(run)
            verdicts[k] = verdict
        bad = list(compress(range(len(runs)), verdicts))  # all but _RUN_TOKENS
        if not bad:
            return
        lines = (np.searchsorted(starts, run_starts[bad], side="right") - 1).tolist()
        empty: set[int] = set()
        for k, i in zip(bad, lines, strict=True):
            if verdicts[k] == _RUN_UNK:
                out[i] = UNK
            else:
                empty.add(i)
        for i in empty:
            # A run with an empty form gives no token: the text has one only if
            # a solo character or another of its runs gives it.
            if out[i] != KEEP or (classes[starts[i]:starts[i] + spans[i]] == SOLO).any():
                continue
            lo, hi = np.searchsorted(run_starts, [starts[i], starts[i] + spans[i]]).tolist()
            if _RUN_TOKENS not in verdicts[lo:hi]:
                out[i] = NO_TOKENS
