"""``danmaku tasks eval``: one table whose every number is recomputed here from the public pieces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.embed.encoder import EncoderSettings
from danmaku.embed.models import load_encoder
from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups
from danmaku.embed.texts import DEFAULT_PHRASES, read_phrases
from tests.support.embed_models import write_google_model

MAX_SEQ_LEN = 32


def rows(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        data = list(csv.reader(handle))[1:]
    return [r[0] for r in data], [r[1] for r in data]


@pytest.fixture(scope="module")
def evaluated(task_dir: Path, tiny_model: Path, tmp_path_factory):
    other = write_google_model(tmp_path_factory.mktemp("other") / "model", seed=1)
    out = tmp_path_factory.mktemp("eval") / "work"
    args = ["tasks", "eval", str(task_dir), "-m", f"base={tiny_model}", "-m", f"tuned={other}",
            "--out", str(out), "--max-steps", "30", "--learning-rate", "1e-3",
            "--max-seq-len", str(MAX_SEQ_LEN), "--resamples", "200", "--probe-max-train", "600"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return args, result.output, out, {"base": tiny_model, "tuned": other}


def test_the_table_holds_every_model_and_the_baseline(evaluated, task_dir: Path):
    _, output, out, _ = evaluated
    report = json.loads((out / "eval.json").read_text())
    assert report["models"] == ["base", "tuned"] and report["tasks"] == [task_dir.name]
    lines = [line for line in output.splitlines()
             if line.startswith(f"| {task_dir.name} |") and "fine-tuned accuracy" not in line]
    assert [line.split(" | ")[1] for line in lines] == ["majority class", "base", "tuned"]
    assert (out / "eval.md").read_text().strip() in output

    train_texts, train_labels = rows(task_dir / "train.csv")
    _, test_labels = rows(task_dir / "test.csv")
    counts = {label: train_labels.count(label) for label in sorted(set(train_labels))}
    majority = max(counts, key=lambda label: (counts[label], -sorted(counts).index(label)))
    base = report["baselines"][task_dir.name]["accuracy"]
    assert base["value"] == pytest.approx(np.mean([label == majority for label in test_labels]))
    assert base["low"] <= base["value"] <= base["high"]


def test_fine_tuned_and_probe_scores_are_recomputed(evaluated, task_dir: Path):
    _, _, out, models = evaluated
    report = json.loads((out / "eval.json").read_text())
    train_texts, train_labels = rows(task_dir / "train.csv")
    test_texts, test_labels = rows(task_dir / "test.csv")
    phrases = read_phrases(DEFAULT_PHRASES)
    for scores in report["scores"]:
        name = scores["model"]
        metrics = json.loads((out / task_dir.name / name / "metrics.json").read_text())
        assert scores["finetuned"]["accuracy"]["value"] == pytest.approx(metrics["test"]["accuracy"])
        assert scores["finetuned"]["macro_f1"]["value"] == pytest.approx(metrics["test"]["macro_f1"])
        assert scores["steps"] == 30

        encoder, _ = load_encoder(models[name], EncoderSettings(max_seq_len=MAX_SEQ_LEN))
        chosen = np.sort(np.random.default_rng(12345).choice(len(train_texts), size=600, replace=False))
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=12345))
        probe.fit(encoder.encode([train_texts[i] for i in chosen]), [train_labels[i] for i in chosen])
        accuracy = accuracy_score(test_labels, probe.predict(encoder.encode(test_texts)))
        assert scores["probe"]["accuracy"]["value"] == pytest.approx(accuracy)
        assert scores["probe_train_rows"] == 600

        mrr = group_mrr(phrases, encoder.encode(phrases), read_groups(DEFAULT_GROUPS)).mrr
        assert report["meme"][name]["mrr"] == pytest.approx(mrr, abs=1e-9)


def test_a_rerun_reuses_the_runs_and_gives_the_same_table(evaluated):
    args, output, out, _ = evaluated
    before = json.loads((out / "eval.json").read_text())
    again = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert again.exit_code == 0, again.output
    assert again.output.count("reusing its results") == 2
    after = json.loads((out / "eval.json").read_text())
    for mine, theirs in zip(after["scores"], before["scores"], strict=True):
        assert mine["finetuned"] == theirs["finetuned"] and mine["probe"] == theirs["probe"]


def test_not_a_task_directory_is_one_clear_error(tmp_path: Path, tiny_model: Path):
    result = CliRunner().invoke(app, ["tasks", "eval", str(tmp_path), "-m", str(tiny_model),
                                      "--out", str(tmp_path / "o")], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "is not a task directory" in result.output and "Traceback" not in result.output
