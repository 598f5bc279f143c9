"""``danmaku pretrain export``: the folders other tools load, and the model card.

The whole chain is real and small: the export fixtures imported into a SQLite
store, ``danmaku corpus export`` (with an eval file), ``pretrain prepare``, a run
directory started by ``train.init_run`` holding a finished run's Google
checkpoint (tiny random BERT, 2 layers of 32). Then the exports are read by
their own tools: ``sentence_transformers.SentenceTransformer``,
``transformers.AutoTokenizer``/``AutoModel``/``AutoModelForPreTraining``, and the
card by ``huggingface_hub.ModelCard`` (the hub's own parser).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.corpus.export import ExportOptions, export_corpus
from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups
from danmaku.embed.texts import DEFAULT_PHRASES, read_phrases
from danmaku.importers.live_chat import import_live_chat
from danmaku.importers.video_csv import import_video_csv
from danmaku.pretrain.evaluate import evaluate
from danmaku.pretrain.instances import InstanceOptions, prepare
from danmaku.pretrain.loading import load_bert
from danmaku.store.db import make_engine
from danmaku.text.tokenizer import BertTokenizer, google_clean
from tests.conftest import FIXTURES
from tests.support.danmaku_sample import real_danmaku
from tests.support.embed_models import VOCAB, tiny_config

runner = CliRunner()
STEP = 7
PHRASES = read_phrases(DEFAULT_PHRASES)


def cli(*args: str):
    return runner.invoke(app, list(args), terminal_width=200)


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """store -> corpus (manifest) -> instances -> run dir with a finished run's model.ckpt-N."""
    import keras

    from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint
    from danmaku.pretrain.model import BertPretrainer
    from danmaku.pretrain.train import TrainSettings, init_run

    root = tmp_path_factory.mktemp("chain")
    engine = make_engine(f"sqlite:///{root / 'store.sqlite'}")
    import_video_csv(engine, FIXTURES / "export" / "video", workers=1)
    import_live_chat(engine, FIXTURES / "export" / "live")
    corpus = export_corpus(engine, VOCAB, out=root / "corpus", options=ExportOptions(eval_fraction=0.3)).path
    engine.dispose()
    instances = root / "instances"
    # google_exact: in this process (no worker pool to spawn for a corpus this small)
    opts = InstanceOptions(max_seq_length=64, dupe_factor=2)
    prepare(corpus, VOCAB, instances, opts=opts, google_exact=True)
    config = tiny_config()
    run = root / "run"
    init_run(run, instances_dir=instances, config=config, settings=TrainSettings(steps=STEP, batch_size=8),
             init_checkpoint="/models/chinese_L-12_H-768_A-12/bert_model.ckpt")
    keras.utils.set_random_seed(4)
    weights = google_weights(BertPretrainer.from_bert_config(config))
    write_google_checkpoint(weights, run / f"model.ckpt-{STEP}", global_step=STEP)
    return {"root": root, "corpus": corpus, "instances": instances, "run": run,
            "prefix": run / f"model.ckpt-{STEP}"}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    long = "我很可爱，请给我钱" * 6  # 54 characters: cut to 30 word pieces
    return PHRASES + real_danmaku(150, seed=21) + [long, "ＡＢＣ全角 ÀÉ", "w" * 40]


@pytest.fixture(scope="module")
def encoded(chain, texts) -> np.ndarray:
    """``danmaku embed encode`` of the run's checkpoint with its defaults: the reference vectors."""
    source = chain["root"] / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = chain["root"] / "reference.npy"
    result = cli("embed", "encode", "-m", str(chain["prefix"]), "-i", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    return np.load(out)


@pytest.fixture(scope="module")
def st_dir(chain) -> Path:
    out = chain["root"] / "danmaku-st"
    result = cli("pretrain", "export", str(chain["prefix"]), "--format", "sentence-transformers", "--out",
                 str(out), "--eval-steps", "2")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def hf_dir(chain) -> Path:
    out = chain["root"] / "danmaku-hf"
    result = cli("pretrain", "export", str(chain["prefix"]), "--format", "hf", "--out", str(out),
                 "--eval-steps", "2")
    assert result.exit_code == 0, result.output
    assert "meme score (group MRR)" in result.output
    return out


def test_sentence_transformers_folder_gives_embed_encodes_vectors(st_dir, texts, encoded):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(st_dir), device="cpu")
    assert model.max_seq_length == 32
    theirs = model.encode(texts, batch_size=64, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, encoded, atol=1e-5)
    pooling = json.loads((st_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert json.loads((st_dir / "config.json").read_text())["architectures"] == ["BertModel"]


def test_hf_folder_loads_with_auto_classes_and_nothing_else(hf_dir, texts, encoded, chain, tmp_path):
    import shutil

    import torch
    from transformers import AutoModel, AutoModelForPreTraining, AutoTokenizer

    alone = tmp_path / "alone"  # a copy far from the run, vocab and instances
    shutil.copytree(hf_dir, alone)
    tokenizer = AutoTokenizer.from_pretrained(alone)
    model = AutoModel.from_pretrained(alone).eval()
    assert type(AutoModelForPreTraining.from_pretrained(alone)).__name__ == "BertForPreTraining"
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None].astype(np.float32)
    np.testing.assert_allclose((hidden * mask).sum(1) / mask.sum(1), encoded, atol=1e-5)  # REDUCE_MEAN
    assert tokenizer.model_max_length == 64  # the model's positions
    assert set(p.name for p in alone.iterdir()) == {
        "config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "README.md"}  # weights, config, vocabulary, card: no corpus, no ids


def test_exported_tokenizer_equals_ours_on_real_chinese_danmaku(hf_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(hf_dir)
    ours = BertTokenizer(hf_dir / "vocab.txt")
    sample = real_danmaku(5000, seed=5)
    got = theirs(sample, add_special_tokens=False)["input_ids"]
    want = ours.ids_batch(sample)
    differ = [t for t, a, b in zip(sample, got, want, strict=True) if a != b]
    # the only disagreements are the documented ones: characters Google's cleaning treats otherwise
    assert all(google_clean(t) != t or "σ" in t.lower() or "ς" in t.lower() for t in differ), differ[:5]
    assert len(differ) <= len(sample) / 500
    # tokenizer.json (what tokenizers and text-embeddings-inference read) keeps Google's 200-character
    # words: WordPiece, not [UNK]; transformers >= 5 rebuilds BertTokenizer with its own limit of 100
    rust = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    for word in ("w" * 150, "2333333333" * 12):
        assert rust.encode(word, add_special_tokens=False).ids == ours.ids_batch([word])[0] != [ours.unk_id]
    framed = rust.encode("阿夸", add_special_tokens=True)
    assert framed.tokens == ["[CLS]", "阿", "夸", "[SEP]"] and framed.ids == theirs("阿夸")["input_ids"]


def test_model_card_follows_the_chain_and_the_hubs_format(hf_dir, chain):
    from huggingface_hub import ModelCard

    card = ModelCard.load(hf_dir / "README.md")
    data = card.data.to_dict()
    assert data["language"] == ["zh"] and data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "fill-mask"
    assert data["base_model"] == "google-bert/bert-base-chinese"  # the run continued chinese_L-12_H-768_A-12
    assert {"bert", "danmaku", "bilibili"} <= set(data["tags"])
    text = card.text
    manifest = json.loads((chain["corpus"] / "manifest.json").read_text())
    assert f"corpus version **`{manifest['version']}`**" in text
    counts = manifest["counts"]
    assert f"| danmaku kept | {counts['danmaku_kept']:,} |" in text
    assert f"| documents (videos and live broadcasts) | {counts['documents']:,} |" in text
    for name, info in manifest["files"].items():
        assert f"`{name}`" in text and info["sha256"] in text
    assert f"| steps | {STEP} |" in text and "| batch size (instances per step) | 8 |" in text
    recorded = json.loads((chain["instances"] / "instances.json").read_text())
    assert f"| eval instances | {recorded['splits']['eval']['instances']:,} from" in text
    # the four metrics, measured again independently on the exported folder itself
    rows = evaluate(load_bert(hf_dir), chain["instances"], max_steps=2)
    for split in ("train", "eval"):
        line = next(line for line in text.splitlines() if line.startswith(f"| danmaku-hf, {split} set |"))
        assert line == "| danmaku-hf, {} set | {} |".format(
            split, " | ".join(f"{rows[split][m]:.6g}" for m in ("masked_lm_accuracy", "masked_lm_loss",
                                                                 "next_sentence_accuracy",
                                                                 "next_sentence_loss")))
    # the meme score, recomputed through danmaku embed's own score on the export
    from danmaku.embed.models import load_encoder

    encoder = load_encoder(hf_dir)[0]
    score = group_mrr(PHRASES, encoder.encode(PHRASES), read_groups(DEFAULT_GROUPS))
    assert f"**{score.mrr:.3f}** (random ranking: {score.chance:.3f}" in text
    assert "viewers' ids" in text and "Danmaku are the words of the Bilibili users" in text
    assert "sqlite" not in text and str(chain["root"] / "store.sqlite") not in card.content  # no store URL


def test_every_format_writes_a_card_and_the_google_one_loads_back(chain, st_dir):
    from huggingface_hub import ModelCard

    out = chain["root"] / "danmaku-google"
    result = cli("pretrain", "export", str(chain["prefix"]), "--format", "google", "--out", str(out),
                 "--no-measure")
    assert result.exit_code == 0, result.output
    google = ModelCard.load(out / "README.md")
    assert google.data.to_dict()["library_name"] == "tensorflow"
    assert f"-ckpt_name model.ckpt-{STEP}" in google.text and "not measured" in google.text
    assert load_bert(out).step == STEP
    again = chain["root"] / "again"  # the same model exported again: the same card, byte for byte
    assert cli("pretrain", "export", str(chain["prefix"]), "--format", "google", "--out", str(again),
               "--no-measure").exit_code == 0
    first = (out / "README.md").read_text()
    assert (again / "README.md").read_text().replace("again", "danmaku-google") == first
    st = ModelCard.load(st_dir / "README.md")
    assert st.data.to_dict()["library_name"] == "sentence-transformers"
    assert "sentence-similarity" in st.data.to_dict()["tags"]
    assert "SentenceTransformer(" in st.text and "| danmaku-st, eval set |" in st.text


def test_a_model_without_a_run_gets_an_honest_card(tmp_path):
    from tests.support.embed_models import write_google_model

    model = write_google_model(tmp_path / "plain", seed=2)
    result = cli("pretrain", "export", str(model), "--format", "hf", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "model card without the four metrics: no eval instances" in flat(result.output)
    text = (tmp_path / "out" / "README.md").read_text()
    assert "base_model" not in text.split("---")[1]  # not a hub id: left out of the front matter
    assert "## Training data\n\nNot recorded" in text and "### Meme score" in text and "**" in text


def test_export_errors_are_one_line(chain, tmp_path):
    result = cli("pretrain", "export", str(chain["prefix"]), "--format", "onnx", "--out", str(tmp_path / "x"))
    assert result.exit_code != 0 and "google, hf, sentence-transformers" in flat(result.output)
    result = cli("pretrain", "export", str(chain["prefix"]), "--format", "hf", "--instances",
                 str(tmp_path / "nope"), "--out", str(tmp_path / "y"))
    assert result.exit_code == 1 and "instances directory not found" in flat(result.output)
    result = cli("pretrain", "export", str(chain["prefix"]), "--format", "sentence-transformers",
                 "--max-seq-len", "65", "--out", str(tmp_path / "z"), "--no-measure")
    assert result.exit_code == 1 and "between 2 and 64" in flat(result.output)
