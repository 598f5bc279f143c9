"""Google BERT's ``FullTokenizer``, token for token, at the speed of HF ``tokenizers``.

The corpus filter, pretraining instances and embeddings must all see exactly
the tokens Google's ``tokenization.FullTokenizer`` (do_lower_case=True) produces;
that reference is pure Python and does ~17 k danmaku/s. HF ``tokenizers``'
``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece`` implement the same
algorithm in Rust, but disagree with Google on two points that real danmaku hit:

* Google deletes NUL, U+FFFD and categories Cc/Cf only (not \\t\\n\\r); it keeps
  private-use, unassigned and surrogate characters inside words (so the word
  becomes ``[UNK]``), while the Rust side deletes every ``C*`` character
  (``\\ue823--`` is ``[UNK] - -`` for Google, ``- -`` for HF).
* Python's ``str.lower`` knows the final sigma (``Σ`` -> ``ς`` at a word end);
  Rust's per-character lowercasing does not.
* Unicode versions differ: a mark that Python's tables call Mn (stripped with
  the accents) may be something else to Rust's, and 104 characters that
  Python calls punctuation (Google splits there: ``0\u1b7d`` is ``0 [UNK]``)
  are unassigned to the Rust pre-tokenizer's tables (one word, ``[UNK]``);
  and the Rust normalizer does not isolate 256 ideographs of Google's CJK
  blocks (U+2B820-U+2B91F). Those are found by asking the Rust side itself,
  once per process, and spaced apart before it sees them.

(U+2028/9 look like a third, but Google's final ``str.split()`` splits there too.)
We resolve the first ourselves before the Rust side sees the text (with
Python's own ``unicodedata``, the one the reference uses): deleted characters
go, kept ones become a letter that is in no vocabulary; and we lowercase and strip
accents in Python.

``tests/text/test_tokenizer.py`` checks token equality with the reference on real
danmaku and on fuzzed text.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

UNK = "[UNK]"
MAX_INPUT_CHARS_PER_WORD = 200  # Google's WordpieceTokenizer default
# A letter (category Lo, not a CJK ideograph, in no BERT vocab) that stands in for
# characters Google keeps inside a word but the Rust side would delete or split on;
# the word then ends up [UNK] on both sides, as Google decides.
# Stand-ins for characters Google keeps but the Rust side would delete: a letter
# (Lo, not CJK) for one inside a word, and a CJK ideograph for one in Google's CJK
# blocks (which Google isolates as a word of its own). Each must be in no vocab
# token; BertTokenizer picks the first candidates its vocabulary lacks.
WORD_STAND_INS = ("\ua000", "\ua001", "\ua002")
CJK_STAND_INS = ("\U00020000", "\U0002a6d6", "\U00020001")


def is_chinese_char(cp: int) -> bool:
    """Google's ``_is_chinese_char``: the CJK ideograph blocks it isolates."""
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


@functools.cache
def _disputed_chars() -> re.Pattern[str]:
    """Regex of every character on which Google and HF ``tokenizers`` disagree."""
    missed = _punctuation_rust_misses()
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if (
            ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")
        ) or cp == 0xFFFD or ch in missed:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    parts = [
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    ]
    return re.compile(f"[{''.join(parts)}]")


@functools.cache
def _punctuation_rust_misses() -> frozenset[str]:
    """Characters Google splits on that the Rust side leaves inside a word.

    Punctuation to Python's tables that the Rust pre-tokenizer does not split
    on, and ideographs in Google's CJK blocks that the Rust normalizer does not
    isolate (its table starts Extension E at U+2B920 where Google's starts at
    U+2B820: ``0\U0002b820`` is ``0 [UNK]`` for Google, ``[UNK]`` for HF).
    Spacing both apart is what Google does to them.
    """
    split = pre_tokenizers.BertPreTokenizer()
    isolate = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True,
                                         strip_accents=False, lowercase=False)
    missed = set()
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if unicodedata.category(ch).startswith("P") and len(split.pre_tokenize_str(f"a{ch}a")) != 3:
            missed.add(ch)
        elif (is_chinese_char(cp) and not unicodedata.category(ch).startswith("C")
              and isolate.normalize_str(ch) != f" {ch} "):
            missed.add(ch)
    return frozenset(missed)


@functools.cache
def _missed_punctuation() -> re.Pattern[str]:
    return re.compile(f"[{''.join(re.escape(ch) for ch in sorted(_punctuation_rust_misses()))}]")


def _resolver(word_stand_in: str, cjk_stand_in: str):
    missed = _punctuation_rust_misses()

    def resolve(match: re.Match[str]) -> str:
        ch = match.group()
        if ch in missed:
            return f" {ch} "  # Google splits there (punctuation, CJK); the spaces make Rust split too
        # Google's _clean_text deletes NUL, U+FFFD and categories Cc/Cf; it keeps
        # Co/Cn/Cs (private use, unassigned, surrogates) as characters, isolating
        # those in its CJK blocks as words of their own.
        if ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Cf"):
            return ""
        return cjk_stand_in if is_chinese_char(ord(ch)) else word_stand_in

    return resolve


def google_clean(text: str, resolve=None) -> str:
    """Resolve, as Google would, every character the Rust tokenizer treats otherwise.

    ``resolve`` maps kept characters to stand-ins that the vocabulary in use
    lacks (``BertTokenizer`` builds one per vocabulary).
    """
    # Fast path (most danmaku): printable text has no C* character; U+FFFD is So.
    if text.isprintable() and "\ufffd" not in text and (
            text.isascii() or not _missed_punctuation().search(text)):
        return text
    return _disputed_chars().sub(resolve or _default_resolver(), text)


@functools.cache
def _default_resolver():
    return _resolver(WORD_STAND_INS[0], CJK_STAND_INS[0])


@functools.cache
def _nonspacing_marks() -> re.Pattern[str]:
    marks = [chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn"]
    return re.compile(f"[{''.join(re.escape(m) for m in marks)}]")


def strip_accents(text: str) -> str:
    """Google's ``_run_strip_accents``: NFD, then drop category Mn, by Python's Unicode tables.

    Done here rather than by the Rust normalizer, whose newer Unicode tables
    disagree on some marks (U+119DA is Mn to Python: Google drops it).
    """
    if text.isascii():
        return text
    if not unicodedata.is_normalized("NFD", text):
        text = unicodedata.normalize("NFD", text)
    return _nonspacing_marks().sub("", text)


def _absent(candidates: Sequence[str], vocab: dict[str, int]) -> str:
    chars = {ch for token in vocab for ch in token}
    for candidate in candidates:
        if candidate not in chars:
            return candidate
    raise ValueError(f"every stand-in character {candidates!r} occurs in the vocabulary")


def load_vocab(vocab_path: str | Path) -> list[str]:
    """Tokens in id order, as Google's ``load_vocab`` reads them (one per line, stripped)."""
    with open(vocab_path, encoding="utf-8") as handle:
        return [line.strip() for line in handle]


@dataclass(frozen=True)
class Piece:
    """A word piece and where it came from: ``text[start:stop]`` of the original text."""

    token: str
    id: int
    start: int
    stop: int


class BertTokenizer:
    """Google ``FullTokenizer``-equivalent tokenization over HF ``tokenizers``.

    Args:
        vocab_path: a BERT ``vocab.txt``.
        do_lower_case: Google's flag (True for Chinese BERT); also strips accents.

    Example:
        >>> tok = BertTokenizer("vocab.txt")
        >>> tok.tokenize("Hello世界")
        ['hello', '世', '界']
    """

    def __init__(self, vocab_path: str | Path, do_lower_case: bool = True) -> None:
        self.vocab_path = Path(vocab_path)
        self.do_lower_case = do_lower_case
        if not self.vocab_path.is_file():
            raise FileNotFoundError(f"vocabulary not found: {self.vocab_path}")
        self.inv_vocab = load_vocab(self.vocab_path)
        self.vocab = {token: i for i, token in enumerate(self.inv_vocab)}
        if UNK not in self.vocab:
            raise ValueError(f"{self.vocab_path} has no {UNK} token: not a BERT vocabulary")
        self.unk_id = self.vocab[UNK]
        self._resolve = _resolver(_absent(WORD_STAND_INS, self.vocab), _absent(CJK_STAND_INS, self.vocab))
        model = WordPiece(
            {t: i for t, i in self.vocab.items()},
            unk_token=UNK,
            max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
        )
        self._hf = Tokenizer(model)
        self._hf.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False,
        )
        self._hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def __len__(self) -> int:
        return len(self.inv_vocab)

    def _prepare(self, text: str) -> str:
        text = google_clean(text, self._resolve)
        return strip_accents(text.lower()) if self.do_lower_case else text

    def tokenize(self, text: str) -> list[str]:
        return self._hf.encode(self._prepare(text), add_special_tokens=False).tokens

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
        prepared = [self._prepare(t) for t in texts]
        return [e.tokens for e in self._hf.encode_batch(prepared, add_special_tokens=False)]

    def ids_batch(self, texts: Sequence[str]) -> list[list[int]]:
        prepared = [self._prepare(t) for t in texts]
        return [e.ids for e in self._hf.encode_batch(prepared, add_special_tokens=False)]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def pieces(self, text: str) -> list[Piece]:
        """The word pieces of ``text`` with character offsets into ``text`` itself.

        The Rust side reports offsets into the *prepared* text (cleaned, lowercased,
        accents stripped), whose length can differ from the original's (a stand-in
        spaced apart, a deleted control character, NFD). Each original character is
        therefore prepared on its own to learn which prepared characters it became;
        that gives the same characters as preparing the whole text (lowercasing is per
        character but for the final sigma, NFD only decomposes and reorders marks), so
        the map is exact. Offsets are Python ``str`` indices (code points): one per
        Chinese character, as a client slicing the text expects.
        """
        prepared = self._prepare(text)
        origin: list[int] = []
        for index, ch in enumerate(text):
            origin += [index] * len(self._prepare(ch))
        if len(origin) != len(prepared):  # cannot happen by the argument above; stay safe
            origin = [min(i, len(text) - 1) for i in range(len(prepared))]
        encoding = self._hf.encode(prepared, add_special_tokens=False)
        return [
            Piece(token, id_, origin[start], origin[stop - 1] + 1)
            for token, id_, (start, stop) in zip(encoding.tokens, encoding.ids, encoding.offsets, strict=True)
        ]
