"""``danmaku embed`` commands end to end on tiny random Google-format models."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.embed.encoder import EncoderSettings
from danmaku.embed.fonts import missing_glyphs
from danmaku.embed.models import load_encoder
from danmaku.embed.neighbors import nearest
from danmaku.embed.plot import layout_2d, tsne_perplexity
from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups
from danmaku.embed.texts import read_phrases
from tests.conftest import SHARED_DATA
from tests.support.embed_models import write_google_model

PHRASES = read_phrases(SHARED_DATA / "meme_phrases.txt")
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, ["embed", *args])


def flat(output: str) -> str:
    """Console output with Rich's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_google_model(tmp_path_factory.mktemp("base"), seed=1)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    return write_google_model(tmp_path_factory.mktemp("tuned"), seed=2)


@pytest.fixture(scope="module")
def encoder(base):
    return load_encoder(base, EncoderSettings())[0]


@pytest.mark.parametrize("command", ["encode", "plot", "neighbors", "score", "serve"])
def test_every_command_has_help_with_an_example(command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_encode_skips_empty_lines_counts_and_names_them(base, encoder, tmp_path):
    lines = ["阿夸", "", "晚安", "   ", "mea", "\t", "草"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("encode", "-m", str(base), "-i", str(src), "-o", str(tmp_path / "v.npy"))
    assert result.exit_code == 0, result.output
    assert "skipped 3 empty line(s) (lines 2, 4, 6)" in flat(result.output)
    vectors = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(vectors, encoder.encode(["阿夸", "晚安", "mea", "草"]), atol=1e-5)


def test_encode_strict_makes_an_empty_line_an_error(base, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("阿夸\n晚安\n\nmea\n", encoding="utf-8")
    result = cli("encode", "-m", str(base), "-i", str(src), "-o", str(tmp_path / "v.npy"), "--strict")
    assert result.exit_code == 1
    assert "line 3 is empty" in result.output
    assert "Traceback" not in result.output


def test_encode_from_stdin_then_resume_equals_one_run(base, tmp_path):
    full, part = tmp_path / "full.npy", tmp_path / "part.npy"
    text = "\n".join(PHRASES) + "\n"
    result = runner.invoke(app, ["embed", "encode", "-m", str(base), "-o", str(full)], input=text)
    assert result.exit_code == 0, result.output
    head = "\n".join(PHRASES[:30]) + "\n"
    result = runner.invoke(app, ["embed", "encode", "-m", str(base), "-o", str(part)], input=head)
    assert result.exit_code == 0, result.output
    assert np.load(part).shape[0] == 30
    result = runner.invoke(app, ["embed", "encode", "-m", str(base), "-o", str(part), "--resume"], input=text)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(part), np.load(full), atol=1e-5)
    assert np.load(full).shape == (92, 32)


def test_encode_token_level_and_concatenated_layers(base, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("阿夸\n我很可爱，请给我钱\n", encoding="utf-8")
    out = tmp_path / "t.npy"
    result = cli("encode", "-m", str(base), "-i", str(src), "-o", str(out), "-p", "none",
                 "--max-seq-len", "8", "-l", "-2", "-l", "-1")
    assert result.exit_code == 0, result.output
    vectors = np.load(out)
    assert vectors.shape == (2, 8, 64)
    assert not vectors[0, 4:].any()  # [CLS] 阿 夸 [SEP], then zero padding
    assert "1 text(s) were longer than --max-seq-len 8" in flat(result.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "/no/such/model"], "model not found: /no/such/model"),
        (["-m", "{base}", "-i", "/no/such/input.txt"], "input not found"),
        (["-m", "{base}", "-l", "-7"], "pooling layer -7 is out of range for a model with 2 layers"),
        (["-m", "{base}", "--max-seq-len", "100"], "max_seq_len must be between 2 and 64"),
        (["-m", "{base}", "--tuned-model-dir", "/no/such/dir"], "tuned model directory not found"),
    ],
)
def test_user_errors_are_one_clear_line(base, tmp_path, args, message):
    src = tmp_path / "in.txt"
    src.write_text("阿夸\n", encoding="utf-8")
    args = [a.format(base=base) for a in args]
    if "-i" not in args:
        args += ["-i", str(src)]
    result = cli("encode", *args, "-o", str(tmp_path / "v.npy"))
    assert result.exit_code == 1, result.output
    assert message in flat(result.output)
    assert "Traceback" not in result.output


def test_neighbors_lists_the_nearest_phrases_without_the_query(base, encoder):
    result = cli("neighbors", "-m", str(base), "阿夸", "-k", "4")
    assert result.exit_code == 0, result.output
    vectors = encoder.encode(PHRASES)
    expected = [PHRASES[i] for i, _ in nearest(vectors[PHRASES.index("阿夸")], vectors, 4,
                                               exclude=PHRASES.index("阿夸"))]
    rows = [line for line in result.output.splitlines() if "│" in line and "phrase" not in line]
    assert [row.split("│")[2].strip() for row in rows] == expected


def test_score_prints_each_models_mrr(base, tuned, encoder):
    result = cli("score", "-m", f"base={base}", "-m", f"tuned={tuned}")
    assert result.exit_code == 0, result.output
    expected = group_mrr(PHRASES, encoder.encode(PHRASES), read_groups(DEFAULT_GROUPS))
    assert f"base\tMRR\t{expected.mrr:.4f}" in result.output
    assert "tuned\tMRR\t" in result.output
    assert "mea / aqua / 阿夸 / meaqua" in result.output


def test_score_refuses_duplicate_names(base):
    result = cli("score", "-m", str(base), "-m", str(base))
    assert result.exit_code == 1
    assert "model names must differ" in result.output


def test_every_meme_phrase_has_glyphs_in_the_cjk_font():
    assert missing_glyphs(PHRASES) == {}
    assert missing_glyphs(["草😀"]) == {"草😀": "😀"}  # the check can fail


def test_layout_follows_the_studys_settings():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=10, size=(3, 60))
    vectors = np.concatenate([c + rng.normal(size=(30, 60)) for c in centers])
    xy = layout_2d(vectors, iterations=500)
    assert xy.shape == (90, 2)
    few = vectors[::3]
    np.testing.assert_array_equal(layout_2d(few, iterations=250), layout_2d(few, iterations=250))  # seed 0
    assert tsne_perplexity(92) == 45 and tsne_perplexity(20) == 19
    # each cluster's points are closer to their own centroid than to any other cluster's
    groups = xy.reshape(3, 30, 2)
    means = groups.mean(axis=1)
    for k in range(3):
        dist = np.linalg.norm(groups[k][:, None, :] - means[None], axis=-1)
        assert (dist.argmin(axis=1) == k).all()


def test_plot_draws_one_readable_panel_per_model(base, tuned, tmp_path):
    out = tmp_path / "meme.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("plot", "-m", f"base={base}", "-m", f"tuned={tuned}", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "missing from font" in str(w.message)]  # no tofu
    width, height = Image.open(out).size
    assert width == 2 * height  # two square panels side by side
    assert "92 phrases x 2 model(s), t-SNE perplexity 45, 0 overlapping label pair(s)" in flat(result.output)
