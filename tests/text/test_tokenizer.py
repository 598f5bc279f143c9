"""The fast tokenizer gives Google's FullTokenizer tokens, exactly."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.importers.parsers import parse_video_csv
from danmaku.text.tokenizer import BertTokenizer, google_clean
from tests.conftest import SHARED_DATA
from tests.support.google_reference import full_tokenizer

VOCAB = SHARED_DATA / "vocab.txt"


@pytest.fixture(scope="module")
def pair():
    return BertTokenizer(VOCAB), full_tokenizer(VOCAB)


# Texts on which the Rust tokenizer and Google's disagree unless danmaku resolves them.
DISPUTED = [
    "\ue823--",                      # private use: Google keeps it -> [UNK]
    "wocΣ(っ °Д °;)っ爱酱",           # final sigma
    "a\u2028b c\u2029",              # line/paragraph separators are not Zs
    "\x0bx\x0c\x85y",                # Cc: deleted
    "zero\u200bwidth\ufeff",         # Cf: deleted
    "\ufffd\x00ok",
    "\U000f0000 \U0010ffff",         # supplementary private use
    "ÀÉÎõü İstanbul ǅ",              # accents, dotted I, title case
    "a" * 201,                       # over max_input_chars_per_word
    "草草草www 88888 awsl",
    "0\U0002b81e",                  # unassigned inside a CJK block: its own word, [UNK]
    "a\ue000\u9fffb",
    "\U000119da",                   # Mn to Python's Unicode tables, not to Rust's
    "x\U000119dax É",
]


def test_disputed_texts_match_google(pair):
    fast, ref = pair
    for text in DISPUTED:
        assert fast.tokenize(text) == ref.tokenize(text), repr(text)
    assert fast.tokenize("\ue823--") == ["[UNK]", "-", "-"]


def test_real_danmaku_match_google(pair):
    """Every token of a 60 k random sample of the real video danmaku."""
    fast, ref = pair
    files = sorted((SHARED_DATA / "video_danmaku").rglob("*.csv"))
    random.Random(7).shuffle(files)
    texts: list[str] = []
    for path in files:
        texts.extend(r[1] for r in parse_video_csv(path.read_bytes()) if isinstance(r, tuple))
        if len(texts) >= 60_000:
            break
    got = fast.tokenize_batch(texts)
    mismatches = [(t, g) for t, g in zip(texts, got, strict=True) if g != ref.tokenize(t)]
    assert not mismatches[:5]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_fuzzed_text_matches_google(pair, text):
    fast, ref = pair
    assert fast.tokenize(text) == ref.tokenize(text)


@pytest.mark.parametrize("text", ["0\u1b7d", "a\u2e52b", "\u061d\u4e00", "x\U0001144by"])
def test_punctuation_newer_than_the_rust_tables_splits_as_google_does(pair, text):
    # Python's tables call these P* (Google splits there); the Rust pre-tokenizer's do not.
    fast, ref = pair
    assert fast.tokenize(text) == ref.tokenize(text)


@pytest.mark.parametrize("text", ["0\U0002b820", "a\U0002b91fb", "\U0002b81f\U0002b820\U0002b920",
                                  "阿\U0002b8aa夸"])
def test_extension_e_ideographs_split_as_google_does(pair, text):
    # Google isolates U+2B820-U+2CEAF; the Rust normalizer's table starts at U+2B920 (found by hypothesis).
    fast, ref = pair
    assert fast.tokenize(text) == ref.tokenize(text)
    assert len(fast.tokenize(text)) == len(ref.tokenize(text)) >= 2


def test_clean_deletes_only_what_google_deletes():
    assert google_clean("a\x00b\u200bc\ufffd") == "abc"
    assert google_clean("\ue000") != ""
    assert google_clean("\t\n\r") == "\t\n\r"


def test_missing_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary not found"):
        BertTokenizer(tmp_path / "nope.txt")
