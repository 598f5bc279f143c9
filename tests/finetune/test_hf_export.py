"""The HF export of a classifier against ``transformers`` (torch): same logits, and the pipeline runs it.

The classifier is keras-hub's ``BertTextClassifier`` on a tiny random BERT
(weights drawn wide, initializer_range 0.2, so a mis-mapped tensor shows) with
a random head; the oracle is ``BertForSequenceClassification.from_pretrained``
on the exported directory, fed the same token ids, and HF's own tokenizer read
from the same directory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from danmaku.finetune.classifier import Predictor, build_classifier, export_hf, load_classifier, predict_texts
from danmaku.finetune.data import encode_rows
from danmaku.pretrain.loading import load_bert
from danmaku.text.tokenizer import BertTokenizer

LABELS = ("1498668", "夏色祭", "room 3", "x", "y")
MAX_SEQ_LEN = 24
TEXTS = ["草", "阿夸可爱", "夏色祭yyds", "awsl awsl", "晚安 88888", "這是繁體字", "kksk！！",
         "一条很长很长的弹幕用来测试截断是否和谷歌的做法完全一样长长长长长长长长"]


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    bert = load_bert(tiny_model)
    classifier = build_classifier(bert, len(LABELS))
    rng = np.random.default_rng(0)
    classifier.output_dense.kernel.assign(rng.normal(0, 0.5, classifier.output_dense.kernel.shape))
    classifier.output_dense.bias.assign(rng.normal(0, 0.5, len(LABELS)))
    out = export_hf(classifier, bert, LABELS, tmp_path_factory.mktemp("clf") / "hf", max_seq_len=MAX_SEQ_LEN)
    data = encode_rows(BertTokenizer(bert.vocab_path), TEXTS, [0] * len(TEXTS), MAX_SEQ_LEN)
    return out, data, Predictor(classifier).logits(data)


def test_transformers_gives_the_same_logits(exported):
    out, data, ours = exported
    model = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert model.config.id2label == dict(enumerate(LABELS))
    ids = torch.tensor(data.ids.astype(np.int64))
    mask = torch.tensor((np.arange(MAX_SEQ_LEN)[None] < data.lengths[:, None]).astype(np.int64))
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask,
                       token_type_ids=torch.zeros_like(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert np.ptp(ours) > 1.0, "logits too flat for the comparison to mean anything"
    assert data.truncated == 1


def test_pipeline_loads_the_directory_and_agrees(exported):
    out, _, ours = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == MAX_SEQ_LEN
    pipe = transformers.pipeline("text-classification", model=str(out), device="cpu")
    got = pipe(TEXTS, truncation=True, top_k=None)
    for text_scores, logits in zip(got, ours, strict=True):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        by_label = {s["label"]: s["score"] for s in text_scores}
        np.testing.assert_allclose([by_label[label] for label in LABELS], probs, atol=1e-4)


def test_export_reloads_into_keras_hub_and_as_a_backbone(exported):
    out, _, ours = exported
    classifier, bert, labels = load_classifier(out)
    assert labels == LABELS
    np.testing.assert_allclose(predict_texts(classifier, bert, TEXTS, MAX_SEQ_LEN), ours, atol=1e-5)
    assert not load_bert(out).heads_loaded  # embed/pretrain read the same dir: backbone only
