"""``danmaku embed`` vectors against HF ``transformers`` (torch) on the same weights.

A tiny random ``transformers.BertModel`` (``gelu_new`` = Google's tanh GELU,
every weight drawn wide so that a mis-mapped tensor shows) is saved in HF
format and, through ``pretrain``'s checkpoint mapping, as a Google model dir
with a bert-as-service-style tuned checkpoint. HF's own tokenizer and
``BertModel(output_hidden_states=True)`` give the hidden states; the reference
poolings below are written per sentence from bert-as-service's definitions
(mean/max over the n tokens ``[CLS] ... [SEP]``, token 0, token n-1), not with
``danmaku.embed.pooling``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from typer.testing import CliRunner

import danmaku.embed
from danmaku.cli.main import app
from danmaku.embed.encoder import Encoder, EncoderSettings
from danmaku.embed.pooling import Pooling
from danmaku.pretrain.checkpoints import google_from_hf, write_google_checkpoint
from danmaku.pretrain.loading import load_bert
from tests.support.embed_models import VOCAB, tiny_config, write_google_model

MAX_SEQ_LEN = 16
TOL = 1e-4
HF_SHAPE = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=64)
TEXTS = [
    *(line.strip() for line in open(Path(danmaku.embed.__file__).parent / "meme_phrases.txt",
                                    encoding="utf-8") if line.strip()),
    "这是一条非常非常长的弹幕用来测试截断是否和谷歌的做法一样长长长长长",  # > 14 pieces: truncated
    "Hello WORLD mea-aqua!!",
]


@pytest.fixture(scope="module")
def hf_model() -> transformers.BertModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=21128, hidden_act="gelu_new", **HF_SHAPE)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = 0.2 * torch.randn_like(param)
            param.copy_(1.0 + noise if "LayerNorm.weight" in name else noise)
    return model


@pytest.fixture(scope="module")
def oracle(hf_model) -> dict[str, np.ndarray]:
    """HF's ids, mask and hidden states [layers + 1, n, MAX_SEQ_LEN, hidden] for TEXTS."""
    tokenizer = transformers.BertTokenizerFast(str(VOCAB), do_lower_case=True)
    batch = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=MAX_SEQ_LEN,
                      return_tensors="pt")
    with torch.no_grad():
        out = hf_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=torch.zeros_like(batch["input_ids"]), output_hidden_states=True)
    return {"ids": batch["input_ids"].numpy(), "mask": batch["attention_mask"].numpy(),
            "hidden": np.stack([h.numpy() for h in out.hidden_states])}


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(out)
    shutil.copyfile(VOCAB, out / "vocab.txt")
    return out


@pytest.fixture(scope="module")
def loaded(hf_dir):
    return load_bert(hf_dir)


def reference(oracle, pooling: Pooling, layers: list[int]) -> np.ndarray:
    """bert-as-service's pooling, sentence by sentence, on HF's hidden states."""
    per_layer = oracle["hidden"][1:]  # bert-as-service indexes encoder layers, not embeddings
    x = np.concatenate([per_layer[layer] for layer in layers], axis=-1)
    rows = []
    for i, n in enumerate(oracle["mask"].sum(axis=1)):
        tokens = x[i, :n]
        if pooling is Pooling.REDUCE_MEAN:
            rows.append(tokens.mean(axis=0))
        elif pooling is Pooling.REDUCE_MAX:
            rows.append(tokens.max(axis=0))
        elif pooling is Pooling.REDUCE_MEAN_MAX:
            rows.append(np.concatenate([tokens.mean(axis=0), tokens.max(axis=0)]))
        elif pooling in (Pooling.CLS_TOKEN, Pooling.FIRST_TOKEN):
            rows.append(tokens[0])
        elif pooling in (Pooling.LAST_TOKEN, Pooling.SEP_TOKEN):
            rows.append(tokens[n - 1])
        else:
            padded = np.zeros((MAX_SEQ_LEN, x.shape[-1]), np.float32)
            padded[:n] = tokens
            rows.append(padded)
    return np.stack(rows)


def test_ids_are_hf_tokenizers(loaded, oracle):
    encoder = Encoder(loaded.backbone, loaded.vocab_path, EncoderSettings(max_seq_len=MAX_SEQ_LEN))
    ids, truncated = encoder.ids_for_texts(TEXTS)
    assert truncated == 1
    for row, (mine, mask) in enumerate(zip(ids, oracle["mask"], strict=True)):
        assert mine == oracle["ids"][row, : mask.sum()].tolist(), TEXTS[row]


@pytest.mark.parametrize(
    ("pooling", "layers"),
    [
        (Pooling.REDUCE_MEAN, [-1]),
        (Pooling.REDUCE_MEAN, [-2]),
        (Pooling.REDUCE_MAX, [-1]),
        (Pooling.REDUCE_MEAN_MAX, [0]),
        (Pooling.CLS_TOKEN, [-1]),
        (Pooling.SEP_TOKEN, [-1]),
        (Pooling.LAST_TOKEN, [-3]),
        (Pooling.NONE, [-1]),
        (Pooling.REDUCE_MEAN, [-3, -1]),
        (Pooling.REDUCE_MAX, [-1, 0, -2]),
    ],
)
def test_poolings_and_layers_equal_transformers(loaded, oracle, pooling, layers):
    # batch_size 7: batches of mixed lengths, so length sorting and un-sorting are exercised
    settings = EncoderSettings(pooling=pooling, layers=tuple(layers), max_seq_len=MAX_SEQ_LEN, batch_size=7)
    encoder = Encoder(loaded.backbone, loaded.vocab_path, settings)
    ours = encoder.encode(TEXTS)
    expected = reference(oracle, pooling, layers)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def google_dirs(hf_model, hf_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A Google base dir with other random weights + a tuned dir holding the torch weights."""
    base = write_google_model(tmp_path_factory.mktemp("base"), seed=5, config=tiny_config(**HF_SHAPE))
    tuned = tmp_path_factory.mktemp("tuned")
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    write_google_checkpoint(google_from_hf(state, tiny_config(**HF_SHAPE)), tuned / "model.ckpt-7",
                            global_step=7)
    return base, tuned


def test_cli_encode_tuned_checkpoint_equals_transformers(google_dirs, oracle, tmp_path):
    """The study's loading: config and vocab from the base dir, weights from -ckpt_name."""
    base, tuned = google_dirs
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    runner = CliRunner()
    tuned_out, base_out = tmp_path / "tuned.npy", tmp_path / "base.npy"
    result = runner.invoke(app, ["embed", "encode", "-m", str(base), "--tuned-model-dir", str(tuned),
                                 "--ckpt-name", "model.ckpt-7", "-i", str(texts), "-o", str(tuned_out),
                                 "--max-seq-len", str(MAX_SEQ_LEN)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tuned_out), reference(oracle, Pooling.REDUCE_MEAN, [-1]),
                               atol=TOL, rtol=0)
    assert "1 text(s) were longer" in result.output
    # the same path as a checkpoint prefix gives the same vectors; the base weights do not
    result = runner.invoke(app, ["embed", "encode", "-m", str(base), "-i", str(texts), "-o", str(base_out),
                                 "--max-seq-len", str(MAX_SEQ_LEN)])
    assert result.exit_code == 0, result.output
    assert np.abs(np.load(base_out) - np.load(tuned_out)).max() > 1e-2
