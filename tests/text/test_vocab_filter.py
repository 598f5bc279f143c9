"""The vocab filter decides exactly as Google's FullTokenizer, on every danmaku."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.corpus.lines import one_line
from danmaku.importers.parsers import LiveDanmaku, parse_live_chat, parse_video_csv
from danmaku.text.vocab_filter import KEEP, NO_TOKENS, UNK, VocabFilter
from tests.conftest import SHARED_DATA
from tests.support.google_reference import full_tokenizer

VOCAB = SHARED_DATA / "vocab.txt"
SAMPLE_LINES = 200_000


@pytest.fixture(scope="module")
def pair():
    return VocabFilter(VOCAB), full_tokenizer(VOCAB)


def google_decision(ref, text: str) -> int:
    tokens = ref.tokenize(text)
    return NO_TOKENS if not tokens else UNK if "[UNK]" in tokens else KEEP


def real_sample() -> list[str]:
    """>= 200 k real danmaku: all live chat, then whole video files in a seeded order."""
    texts = [item.text for path in sorted((SHARED_DATA / "live_danmaku").rglob("*.txt"))
             for item in parse_live_chat(path.read_bytes()) if isinstance(item, LiveDanmaku)]
    files = sorted((SHARED_DATA / "video_danmaku").rglob("*.csv"))
    random.Random(20261129).shuffle(files)
    for path in files:
        texts.extend(r[1] for r in parse_video_csv(path.read_bytes()) if isinstance(r, tuple))
        if len(texts) >= SAMPLE_LINES:
            break
    return texts


def test_same_decision_as_google_on_200k_real_danmaku(pair):
    """Every danmaku of the sample, raw and as the one line the export writes.

    The reference runs once per distinct text (it is a pure function); every
    danmaku's decision is compared, in chunks as the export makes them.
    """
    fast, ref = pair
    texts = real_sample()
    assert len(texts) >= SAMPLE_LINES
    inputs = texts + [one_line(t) for t in texts]
    reference = {t: google_decision(ref, t) for t in set(inputs)}
    got: list[int] = []
    for start in range(0, len(inputs), 20_000):
        got.extend(fast.decide_batch(inputs[start:start + 20_000]))
    mismatches = [(t, g, reference[t]) for t, g in zip(inputs, got, strict=True) if g != reference[t]]
    assert mismatches[:10] == []
    # The sample exercises every path of the filter, and both verdicts.
    tiers = fast.tier_counts
    assert tiers["solo"] > 100_000 and tiers["word"] > 10_000 and tiers["drop"] > 1_000
    assert tiers["tokenizer"] > 20
    assert got.count(UNK) > 1_000 and got.count(NO_TOKENS) > 0


CURATED = [
    "草", "awsl", "AWSL", "Awsl!", "lei了", "233333", "8" * 201, "a" * 200, "🤣", "草🤣", "", " ", "\u3000",
    "\u200b", "草\u200b", "ab\u200bcd", "a\u200b草", "\ue823--", "\ue823", "wocΣ(っ °Д °;)っ爱酱",
    "ΣΣ", "Σa", "İstanbul", "ÉCOLE", "é", "e\u0301", "\u0301", "\u0301草", "ﬁ", "Ａｗｓｌ", "ＡＷＳＬ",
    "\uf900", "\U00020000", "\U0002f800", "あいうえお", "ありがとう", "한국어", "a\u2028b", "\x1c", "x\x85y",
    "\ufffd", "\x00草", "##", "#a", "[UNK]", "[CLS]", "ｗｗｗ", "…", "‼", "¿qué?", "Ⅻ", "①②",
    "\U0001f600草", "d\u0307", "ß", "ﬀ", "ǅ", "\u00a0草\u00a0", "\u180e", "\U000e0001", "\U000f0000",
]


def test_curated_corner_cases(pair):
    fast, ref = pair
    assert fast.decide_batch(CURATED) == [google_decision(ref, t) for t in CURATED]
    assert [fast.decide(t) for t in CURATED] == [google_decision(ref, t) for t in CURATED]
    assert fast.decide_batch(["草", "awsl", "🤣", " "]) == [KEEP, KEEP, UNK, NO_TOKENS]


_ALPHABET = st.sampled_from(sorted(set(
    "草哈啊的了是我你他一二三好高能前方弹幕awsltqlkABCXYZ0123456789 ,.!?;:-~#()[]（）！？，。、…「」"
    "\t\n\r\x0b\x1c\x85\u2028\u3000\u00a0\u200b\u200d\ufeff\ufffd\x00\ue823\U000f0000🤣😀♥★"
    "あア한ÉéèΣσςİıßﬁＡａ\u0301\u0307\uf900\U00020000\u4dbf\u9fff々〇"
    "がド눈\ufe0fัÅ\u0323\u200d\u0e01"
)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet=_ALPHABET, max_size=14), min_size=1, max_size=8))
def test_fuzzed_batches_match_google(pair, texts):
    fast, ref = pair
    assert fast.decide_batch(texts) == [google_decision(ref, t) for t in texts]


def test_wordpiece_is_googles(pair):
    fast, ref = pair
    for word in ["awsl", "tql", "233", "meaqua", "hololive", "a" * 200, "a" * 201, "xyzzyq", "optifine"]:
        assert fast.wordpiece_ok(word) == ("[UNK]" not in ref.wordpiece_tokenizer.tokenize(word)), word


def test_missing_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary not found"):
        VocabFilter(tmp_path / "vocab.txt")


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "草", "哈", "!", "(", ")", ",", ".", "'", ":",
              "a", "b", "e",
              "ab", "##b", "##a", "##σ", "σ", "##e", "ﬁ", "##\u200b", "İ", "##ı", "か", "##か"]


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A vocab where lowercasing context matters: "aΣ" is a + ##ς (absent) for Google,
    but "aΣ.b" is a + ##σ, . , b (the final sigma looks past "." to the "b").

    (No private-use token: ``BertTokenizer`` assumes none, as in Google's vocabs.)
    """
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return VocabFilter(path), full_tokenizer(path)


def test_exact_on_another_vocab(tiny_pair):
    fast, ref = tiny_pair
    texts = ["aΣ", "Σa", "aΣb", "aΣ!", "aΣ.b", "aΣ'b", "aΣ:b", "aΣ,b",
             "aσ", "AB", "Ab", "é", "É", "ﬁ", "\ue823", "a\u200bb", "İ", "ı",
             "草哈", "草x", "(a)", "a,b", "哈\u0301", "ba"]
    assert fast.decide_batch(texts) == [google_decision(ref, t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(
    "abeABEΣσςİı草哈x!(),.':; \u0301\u200b\ue823ﬁé\tかがガ\ufe0f"), max_size=10), min_size=1, max_size=6))
def test_fuzzed_batches_on_another_vocab(tiny_pair, texts):
    fast, ref = tiny_pair
    assert fast.decide_batch(texts) == [google_decision(ref, t) for t in texts]
