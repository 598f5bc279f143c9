"""A trimmed vocabulary keeps what Google's tokenizer uses on the training file, and tokenises it the same.

The oracle is Google's ``FullTokenizer`` (``bert-tensorflow``) on the real
fixture corpus: the kept tokens are exactly the ones it produces on the
training file (plus BERT's special tokens), in the source order; and Google's
tokenizer built on the trimmed vocabulary gives every training line the same
tokens as on the full one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.pretrain.instances import prepare
from danmaku.pretrain.vocab_trim import SPECIAL_TOKENS, trim_vocab
from danmaku.text.tokenizer import load_vocab
from tests.conftest import FIXTURES, SHARED_DATA
from tests.support.google_reference import full_tokenizer

CORPUS = FIXTURES / "pretrain_corpus"
VOCAB = SHARED_DATA / "vocab.txt"


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def google_counts() -> dict[str, int]:
    tok = full_tokenizer(VOCAB)
    counts: dict[str, int] = {}
    for line in _lines(CORPUS / "danmaku_text_pure.txt"):
        for token in tok.tokenize(line):
            counts[token] = counts.get(token, 0) + 1
    return counts


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory, google_counts):
    out = tmp_path_factory.mktemp("trim") / "vocab.txt"
    return trim_vocab(CORPUS, VOCAB, out, workers=2)


def test_keeps_exactly_the_tokens_google_uses_on_the_training_file(trimmed, google_counts):
    full = load_vocab(VOCAB)
    expected = [t for t in full if t in google_counts or t in SPECIAL_TOKENS]
    assert load_vocab(trimmed.path) == expected
    assert trimmed.kept == len(expected) < len(full) // 2  # a small corpus uses few tokens
    assert trimmed.source_size == len(full)
    assert trimmed.tokens == sum(google_counts.values())
    assert trimmed.lines == len(_lines(CORPUS / "danmaku_text_pure.txt"))
    assert load_vocab(trimmed.path)[:1] == ["[PAD]"]  # id 0 stays the padding id


def test_training_file_tokenises_the_same_with_the_trimmed_vocab(trimmed):
    full, small = full_tokenizer(VOCAB), full_tokenizer(trimmed.path)
    lines = _lines(CORPUS / "danmaku_text_pure.txt")
    assert [small.tokenize(line) for line in lines] == [full.tokenize(line) for line in lines]
    # held-out text may hold tokens the training file lacks (they become [UNK] or other pieces);
    # a line tokenises differently only if it does
    kept = set(load_vocab(trimmed.path))
    eval_lines = _lines(CORPUS / "danmaku_text_pure.eval.txt")
    changed = [line for line in eval_lines if small.tokenize(line) != full.tokenize(line)]
    assert changed and all(set(full.tokenize(line)) - kept for line in changed)


def test_only_the_training_file_counts(tmp_path, trimmed):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "danmaku_text_pure.txt", corpus)
    unused = next(t for t in load_vocab(VOCAB) if len(t) == 1 and "\u4e00" <= t <= "\u9fff"
                  and t not in set(load_vocab(trimmed.path)))
    (corpus / "danmaku_text_pure.eval.txt").write_text(unused * 3 + "\n", encoding="utf-8")
    again = trim_vocab(corpus, VOCAB, tmp_path / "v.txt", workers=1)
    assert again.path.read_bytes() == trimmed.path.read_bytes()
    assert unused not in load_vocab(again.path)


def test_min_count_drops_rare_tokens(tmp_path, trimmed, google_counts):
    rare = trim_vocab(CORPUS, VOCAB, tmp_path / "v.txt", min_count=5, workers=1)
    kept = set(load_vocab(rare.path))
    assert kept == {t for t, n in google_counts.items() if n >= 5} | set(SPECIAL_TOKENS)
    with pytest.raises(ValueError, match="min_count"):
        trim_vocab(CORPUS, VOCAB, tmp_path / "w.txt", min_count=0)


def test_a_training_file_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "danmaku_text_pure.txt").write_bytes("好\n".encode() + b"\xff\xfe\n")
    with pytest.raises(ValueError, match="danmaku_text_pure.txt is not UTF-8 text"):
        trim_vocab(tmp_path, VOCAB, tmp_path / "out.txt", workers=1)
    assert not (tmp_path / "out.txt").exists()


def test_a_vocabulary_without_bert_special_tokens_is_refused(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n你\n好\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks \[SEP\], \[CLS\], \[MASK\]: not a BERT vocabulary"):
        trim_vocab(CORPUS, vocab, tmp_path / "out.txt")


def test_cli_trims_and_a_tiny_preset_trains_on_its_instances(tmp_path, trimmed):
    runner = CliRunner()
    out = tmp_path / "vocab.txt"
    result = runner.invoke(app, ["pretrain", "vocab", str(CORPUS), "--vocab", str(VOCAB), "--out", str(out),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"kept {trimmed.kept:,} of 21,128 tokens" in result.output
    assert out.read_bytes() == trimmed.path.read_bytes()
    prepare(CORPUS, out, tmp_path / "inst", workers=1)
    result = runner.invoke(app, ["pretrain", "train", "--instances", str(tmp_path / "inst"),
                                 "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
                                 "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    config = (tmp_path / "run" / "bert_config.json").read_text()
    assert f'"vocab_size": {trimmed.kept}' in config
    missing = runner.invoke(app, ["pretrain", "vocab", str(CORPUS), "--vocab", str(tmp_path / "no.txt"),
                                  "--out", str(out)])
    assert missing.exit_code != 0 and "vocabulary not found" in missing.output
