"""Fine-tuning on a small real task: it learns, its numbers are scikit-learn's, it resumes, the CLI.

The task is four uploaders of the shared sample (``tests/support/task_data.py``):
which uploader's video was a comment written under, split by video. A tiny
random BERT fine-tuned for a few epochs must beat the majority class on the
held-out videos; ``metrics.json`` must be what scikit-learn computes from the
predictions, and the HF export must predict the same labels through
``transformers.pipeline``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import transformers
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.finetune.train import FinetuneError, FinetuneOptions, FinetuneSettings, classify

SETTINGS = FinetuneSettings(epochs=3, learning_rate=1e-3, max_seq_len=32, batch_size=32)


class Killed(Exception):
    pass


def read(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[1:]


@pytest.fixture(scope="module")
def finished(task_dir: Path, tiny_model: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "clf"
    evals = []
    result = classify(tiny_model, task_dir / "train.csv", task_dir / "dev.csv", out,
                      test=task_dir / "test.csv", settings=SETTINGS,
                      on_eval=lambda step, m, better: evals.append((step, better)))
    return result, evals


def test_beats_the_majority_class_on_held_out_videos(finished):
    result, evals = finished
    m = result.metrics
    assert result.stopped == "done" and result.step == result.total_steps
    assert [step for step, _ in evals] == [e["step"] for e in m["history"]]
    assert m["best_step"] in [step for step, better in evals if better]
    base = m["majority_baseline"]["test"]
    assert m["test"]["accuracy"] > base["accuracy"] + 0.05, (m["test"], base)
    assert m["test"]["macro_f1"] > base["macro_f1"] + 0.05


def test_metrics_are_scikit_learns_of_the_predictions(finished, task_dir: Path):
    result, _ = finished
    m = result.metrics
    predictions = read(result.out / "predictions-test.csv")
    assert [row[:2] for row in predictions] == read(task_dir / "test.csv")
    truth, guess = [row[1] for row in predictions], [row[2] for row in predictions]
    labels = m["labels"]
    assert m["test"]["accuracy"] == pytest.approx(accuracy_score(truth, guess), abs=1e-12)
    assert m["test"]["macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro"), abs=1e-12)
    assert m["test"]["confusion_matrix"] == confusion_matrix(truth, guess, labels=labels).tolist()
    report = classification_report(truth, guess, labels=labels, output_dict=True, zero_division=0)
    for label in labels:
        assert m["test"]["per_class"][label] == pytest.approx(report[label])
    majority = max(labels, key=lambda label: (sum(t == label for t in read(task_dir / "train.csv")),
                                              -labels.index(label)))
    # (ties: the lowest label id, as in metrics.majority_class)
    assert m["majority_baseline"]["test"]["predicts"] == majority
    share = np.mean([t == majority for t in truth])
    assert m["majority_baseline"]["test"]["accuracy"] == pytest.approx(share)


def test_transformers_pipeline_predicts_the_same_labels(finished):
    result, _ = finished
    rows = read(result.out / "predictions-test.csv")
    pipe = transformers.pipeline("text-classification", model=str(result.out / "hf"), device="cpu")
    got = [p["label"] for p in pipe([row[0] for row in rows], truncation=True, batch_size=64)]
    agree = np.mean([g == row[2] for g, row in zip(got, rows, strict=True)])
    assert agree >= 0.99, agree  # HF's Rust tokenizer may split a rare character differently


def test_a_killed_run_resumes_to_the_same_result(finished, task_dir: Path, tiny_model: Path, tmp_path: Path):
    result, _ = finished
    out = tmp_path / "killed"

    def kill_at_25(step: int, _loss: float) -> None:
        if step == 25:
            raise Killed

    args = (tiny_model, task_dir / "train.csv", task_dir / "dev.csv", out)
    with pytest.raises(Killed):
        classify(*args, test=task_dir / "test.csv", settings=SETTINGS, options=FinetuneOptions(save_every=10),
                 on_step=kill_at_25)
    assert json.loads((out / "state.json").read_text())["step"] == 20
    starts = []
    resumed = classify(*args, test=task_dir / "test.csv", settings=SETTINGS,
                       on_begin=lambda start, total: starts.append(start))
    assert starts == [20]
    assert resumed.metrics["test"] == result.metrics["test"]
    assert len(resumed.metrics["history"]) == len(result.metrics["history"])
    for mine, theirs in zip(resumed.metrics["history"], result.metrics["history"], strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5)
    assert (out / "predictions-test.csv").read_bytes() == (result.out / "predictions-test.csv").read_bytes()
    assert not (out / "checkpoints").exists()

    again = classify(*args, test=task_dir / "test.csv", settings=SETTINGS)
    assert again.reused and again.metrics == resumed.metrics
    with pytest.raises(FinetuneError, match="started with other .*settings"):
        classify(*args, settings=FinetuneSettings(learning_rate=1e-4))


def test_cli_reports_bad_rows_and_user_errors(task_dir: Path, tiny_model: Path, tmp_path: Path):
    dev = tmp_path / "dev.csv"
    bad = ",1498668\n一,二,三\n晚安,nobody\n"  # empty text, three columns, unknown label
    dev.write_text((task_dir / "dev.csv").read_text(encoding="utf-8") + bad, encoding="utf-8")
    runner = CliRunner()
    args = ["finetune", "classify", "-m", str(tiny_model), "--train", str(task_dir / "train.csv"),
            "--dev", str(dev), "--out", str(tmp_path / "o"), "--max-steps", "3", "--max-seq-len", "32"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "left out 3 of" in result.output
    assert "1 empty text, 1 unknown label, 1 wrong column count" in result.output
    assert (tmp_path / "o" / "hf" / "model.safetensors").is_file()

    missing = runner.invoke(app, [*args[:4], "--train", str(tmp_path / "nope.csv"), *args[6:]],
                            env={"COLUMNS": "200"})
    assert missing.exit_code == 1 and "CSV not found" in missing.output and "Traceback" not in missing.output
    too_long = runner.invoke(app, [*args[:-1], "1000"], env={"COLUMNS": "200"})
    assert too_long.exit_code == 1 and "exceeds the model's 64 positions" in too_long.output
