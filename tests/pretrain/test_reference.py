"""The bigram count reference: a hand-computed case, and an independent plain-Python implementation.

Oracles: probabilities worked out by hand (in the comments) for a 9-token
vocabulary; a slow reimplementation that reads the training file and the
TFRecord shards itself (line by line, ``tf.train.Example``) and evaluates the
smoothing formula token by token.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.pretrain.instances import InstanceOptions, prepare
from danmaku.pretrain.reference import BigramReference, count_bigrams, reference_metrics
from danmaku.text.tokenizer import BertTokenizer
from tests.conftest import FIXTURES, SHARED_DATA

VOCAB = SHARED_DATA / "vocab.txt"
CORPUS = FIXTURES / "pretrain_corpus"
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "我", "你", "好", "的"]
PAD, UNK, CLS, SEP, MASK, WO, NI, HAO, DE = range(len(TOKENS))


@pytest.fixture
def tiny(tmp_path: Path) -> BigramReference:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    train = tmp_path / "train.txt"
    train.write_text("我好\n你好\n\n我的\n", encoding="utf-8")  # documents: 我好你好 | 我的
    return BigramReference(count_bigrams(train, vocab, workers=1))


def test_counts_join_lines_but_not_documents(tiny: BigramReference):
    counts = tiny.counts
    assert counts.unigrams.tolist() == [0, 0, 0, 0, 0, 2, 1, 2, 1]
    pairs = {(int(a), int(b)): int(n) for a, b, n in zip(*counts.bigrams.nonzero(), counts.bigrams.data,
                                                         strict=True)}
    # 我好 好你 (across the line break) 你好; 我的 -- and not 好我 (across the document break)
    assert pairs == {(WO, HAO): 1, (HAO, NI): 1, (NI, HAO): 1, (WO, DE): 1}
    assert (counts.lines, counts.documents, counts.tokens) == (3, 2, 6)


def test_hand_computed_probabilities(tiny: BigramReference):
    # P1 = (c + 1) / (6 + 9): 我 好 3/15, 你 的 2/15, the five others 1/15.
    # "我 [MASK] 你": P(t|我) = (c(我,t) + 2 P1(t)) / 4 -> 好 21/60, 的 19/60, 你 4/60, 我 6/60, others 2/60;
    # P(你|t) = (c(t,你) + T(t) P1(你)) / (c(t) + T(t)) -> 好 17/30, 我 2/30, 你 2/30, 的 and the
    # others (never on the left) P1(你) = 4/30. Products x1800: 357, 76, 8, 12, 8 x 5; sum 493.
    logp = tiny.log_probs(np.array([WO]), np.array([NI]))[0]
    expected = np.full(9, 8.0)
    expected[[HAO, DE, NI, WO]] = [357, 76, 8, 12]
    np.testing.assert_allclose(np.exp(logp), expected / 493, rtol=1e-12)
    # "[CLS] [MASK] 好": no left evidence, P1(t) P(好|t) -> x900: 我 63, 好 18, 你 72, 的 24, others 12.
    logp = tiny.log_probs(np.array([CLS]), np.array([HAO]))[0]
    expected = np.full(9, 12.0)
    expected[[WO, HAO, NI, DE]] = [63, 18, 72, 24]
    np.testing.assert_allclose(np.exp(logp), expected / 237, rtol=1e-12)
    # no evidence at all: the unigram
    np.testing.assert_allclose(np.exp(tiny.log_probs(np.array([MASK]), np.array([-1]))[0]),
                               np.array([1, 1, 1, 1, 1, 3, 2, 3, 2]) / 15, rtol=1e-12)


def test_score_uses_the_visible_neighbours_and_the_weights(tiny: BigramReference):
    ids = np.array([[CLS, WO, MASK, NI, SEP, PAD], [CLS, MASK, HAO, SEP, PAD, PAD]])
    positions = np.array([[2, 0], [1, 0]])
    labels = np.array([[HAO, 0], [WO, 0]])
    weights = np.array([[1.0, 0.0], [1.0, 0.0]])
    sums = tiny.score(ids, positions, labels, weights)
    assert sums["mlm_weight"] == 2.0
    assert sums["mlm_correct"] == 1.0  # 好 is right; 你 (72) beats the label 我 (63)
    assert sums["mlm_loss_sum"] == pytest.approx(-math.log(357 / 493) - math.log(63 / 237), rel=1e-12)


# ---------------------------------------------------------------------------
# an independent, slow implementation on real danmaku
# ---------------------------------------------------------------------------
def _plain_counts(path: Path, tok: BertTokenizer):
    unigrams, bigrams = Counter(), Counter()
    doc: list[int] = []

    def flush() -> None:
        unigrams.update(doc)
        bigrams.update(zip(doc, doc[1:], strict=False))

    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            flush()
            doc = []
        else:
            doc.extend(tok.convert_tokens_to_ids(tok.tokenize(line.strip())))
    flush()
    return unigrams, bigrams


def _plain_metrics(files: list[str], unigrams: Counter, bigrams: Counter, vocab: int, special: set[int],
                   records: int) -> tuple[float, float]:
    total = sum(unigrams.values())
    p1 = [(unigrams[t] + 1) / (total + vocab) for t in range(vocab)]
    left_total, left_types = Counter(), Counter()
    for (a, _), n in bigrams.items():
        left_total[a] += n
        left_types[a] += 1

    def p_next(a: int, b: int) -> float:  # Witten-Bell P(b | a)
        if not left_total[a]:
            return p1[b]
        return (bigrams[a, b] + left_types[a] * p1[b]) / (left_total[a] + left_types[a])

    loss = correct = weight = 0.0
    seen = 0
    for name in sorted(files):
        for raw in tf.data.TFRecordDataset(name):
            if seen == records:
                break
            seen += 1
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            ids = list(f["input_ids"].int64_list.value)
            for pos, label, w in zip(f["masked_lm_positions"].int64_list.value,
                                     f["masked_lm_ids"].int64_list.value,
                                     f["masked_lm_weights"].float_list.value, strict=True):
                if w == 0:
                    continue
                left = ids[pos - 1] if pos > 0 else None
                right = ids[pos + 1] if pos + 1 < len(ids) else None
                scores = []
                for t in range(vocab):
                    s = p_next(left, t) if left is not None and left not in special else p1[t]
                    if right is not None and right not in special:
                        s *= p_next(t, right)
                    scores.append(s)
                z = sum(scores)
                loss += w * -math.log(scores[label] / z)
                correct += w * (max(range(vocab), key=scores.__getitem__) == label)
                weight += w
    return correct / weight, loss / weight


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("instances")
    prepare(CORPUS, VOCAB, out, opts=InstanceOptions(dupe_factor=1), workers=1)
    return out


def test_matches_a_plain_python_implementation(instances: Path):
    result = reference_metrics(CORPUS, instances, batch_size=4, max_steps=1)
    tok = BertTokenizer(VOCAB)
    unigrams, bigrams = _plain_counts(CORPUS / "danmaku_text_pure.txt", tok)
    assert result.counted["tokens"] == sum(unigrams.values())
    assert result.counted["bigram_types"] == len(bigrams)
    special = {tok.vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    for split in ("train", "eval"):
        files = sorted(str(p) for p in instances.glob(f"{split}-*.tfrecord"))
        accuracy, loss = _plain_metrics(files, unigrams, bigrams, len(tok.vocab), special, records=4)
        assert result.rows[split]["examples"] == 4
        assert result.rows[split]["masked_lm_accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert result.rows[split]["masked_lm_loss"] == pytest.approx(loss, rel=1e-9)


def test_workers_count_the_same(tmp_path: Path):
    one = count_bigrams(CORPUS / "danmaku_text_pure.txt", VOCAB, workers=1, chunk_lines=3000)
    two = count_bigrams(CORPUS / "danmaku_text_pure.txt", VOCAB, workers=2, chunk_lines=3000)
    assert np.array_equal(one.unigrams, two.unigrams)
    assert (one.bigrams != two.bigrams).nnz == 0


def test_eval_reference_command(instances: Path, tmp_path: Path):
    import keras

    from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint
    from danmaku.pretrain.config import BertConfig
    from danmaku.pretrain.model import BertPretrainer

    keras.utils.set_random_seed(3)
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    weights = google_weights(BertPretrainer.from_bert_config(config))
    write_google_checkpoint(weights, model_dir / "bert_model.ckpt")
    config.to_json_file(model_dir / "bert_config.json")
    (model_dir / "vocab.txt").write_bytes(VOCAB.read_bytes())
    args = ["pretrain", "eval", str(model_dir), "--instances", str(instances), "--max-steps", "2",
            "--json", str(tmp_path / "eval.json")]
    result = CliRunner().invoke(app, [*args, "--reference", str(CORPUS)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    expected = reference_metrics(CORPUS, instances, max_steps=2).rows
    for split in ("train", "eval"):
        row = f"| bigram counts (reference), {split}"
        line = next(x for x in result.output.splitlines() if x.startswith(row))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[1]) == pytest.approx(expected[split]["masked_lm_accuracy"], rel=1e-5)
        assert float(cells[2]) == pytest.approx(expected[split]["masked_lm_loss"], rel=1e-5)
        assert cells[3] == cells[4] == "-"
    # a corpus the instances were not made from is refused in one line
    other = tmp_path / "other.txt"
    other.write_text("你好\n", encoding="utf-8")
    result = CliRunner().invoke(app, [*args, "--reference", str(other)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "give the corpus the instances were prepared from" in " ".join(result.output.split())
