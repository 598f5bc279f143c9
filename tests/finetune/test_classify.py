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
import re
from dataclasses import dataclass
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


@dataclass
class Run:
    out: Path
    dev: Path
    output: str

    @property
    def metrics(self) -> dict:
        return json.loads((self.out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> Path:
    """The tiny random BERT drawn at Google's 0.02, as a from-scratch model starts.

    (The shared ``tiny_model`` is drawn wide, 0.2, so that oracle tests see a
    mis-mapped tensor; from such a start 3 epochs learn too little to test.)
    """
    from tests.support.embed_models import tiny_config, write_google_model

    return write_google_model(tmp_path_factory.mktemp("start") / "model", seed=0,
                              config=tiny_config(initializer_range=0.02))


@pytest.fixture(scope="module")
def finished(task_dir: Path, start_model: Path, tmp_path_factory) -> Run:
    """``danmaku finetune classify`` on the task, its dev file with three bad rows added."""
    root = tmp_path_factory.mktemp("run")
    dev = root / "dev.csv"
    bad = ",1498668\n一,二,三\n晚安,nobody\n"  # empty text, three columns, unknown label
    dev.write_text((task_dir / "dev.csv").read_text(encoding="utf-8") + bad, encoding="utf-8")
    args = ["finetune", "classify", "-m", str(start_model), "--train", str(task_dir / "train.csv"),
            "--dev", str(dev), "--test", str(task_dir / "test.csv"), "--out", str(root / "clf"),
            "--epochs", "3", "--learning-rate", "1e-3", "--max-seq-len", "32", "--batch-size", "32"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return Run(root / "clf", dev, result.output)


def test_beats_the_majority_class_on_held_out_videos(finished: Run):
    m = finished.metrics
    assert m["stopped"] == "done" and m["steps"] == m["total_steps"]
    shown = re.findall(r"step (\d+): dev accuracy ([\d.]+), macro-F1 ([\d.]+)( best)?", finished.output)
    assert [int(step) for step, *_ in shown] == [e["step"] for e in m["history"]]
    assert m["best_step"] in [int(step) for step, _, _, best in shown if best]
    base = m["majority_baseline"]["test"]
    assert m["test"]["accuracy"] > base["accuracy"] + 0.05, (m["test"], base)
    assert m["test"]["macro_f1"] > base["macro_f1"] + 0.05
    assert f"{m['test']['accuracy']:.4f}" in finished.output and f"{base['accuracy']:.4f}" in finished.output


def test_bad_rows_are_left_out_counted_and_shown(finished: Run):
    assert "dev.csv: left out 3 of" in finished.output
    assert "1 empty text, 1 unknown label, 1 wrong column count" in finished.output
    expected = {"empty text": 1, "unknown label": 1, "wrong column count": 1}
    assert finished.metrics["left_out"]["dev"] == expected


def test_metrics_are_scikit_learns_of_the_predictions(finished: Run, task_dir: Path):
    m = finished.metrics
    predictions = read(finished.out / "predictions-test.csv")
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


def test_transformers_pipeline_predicts_the_same_labels(finished: Run):
    rows = read(finished.out / "predictions-test.csv")
    pipe = transformers.pipeline("text-classification", model=str(finished.out / "hf"), device="cpu")
    got = [p["label"] for p in pipe([row[0] for row in rows], truncation=True, batch_size=64)]
    agree = np.mean([g == row[2] for g, row in zip(got, rows, strict=True)])
    assert agree >= 0.99, agree  # HF's Rust tokenizer may split a rare character differently


def test_a_killed_run_resumes_to_the_same_result(finished: Run, task_dir: Path, start_model: Path,
                                                 tmp_path: Path):
    reference = finished.metrics
    out = tmp_path / "killed"

    def kill_at_25(step: int, _loss: float) -> None:
        if step == 25:
            raise Killed

    args = (str(start_model), task_dir / "train.csv", finished.dev, out)
    with pytest.raises(Killed):
        classify(*args, test=task_dir / "test.csv", settings=SETTINGS, options=FinetuneOptions(save_every=10),
                 on_step=kill_at_25)
    assert json.loads((out / "state.json").read_text())["step"] == 20
    starts = []
    resumed = classify(*args, test=task_dir / "test.csv", settings=SETTINGS,
                       on_begin=lambda start, total: starts.append(start))
    assert starts == [20]
    assert resumed.metrics["test"] == reference["test"]
    assert len(resumed.metrics["history"]) == len(reference["history"])
    for mine, theirs in zip(resumed.metrics["history"], reference["history"], strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5)
    assert (out / "predictions-test.csv").read_bytes() == (finished.out / "predictions-test.csv").read_bytes()
    assert not (out / "checkpoints").exists()

    again = classify(*args, test=task_dir / "test.csv", settings=SETTINGS)
    assert again.reused and again.metrics == resumed.metrics
    with pytest.raises(FinetuneError, match="started with other .*settings"):
        classify(*args, settings=FinetuneSettings(learning_rate=1e-4))


def test_user_errors_are_one_line(task_dir: Path, tiny_model: Path, tmp_path: Path):
    runner = CliRunner()
    args = ["finetune", "classify", "-m", str(tiny_model), "--train", str(task_dir / "train.csv"),
            "--dev", str(task_dir / "dev.csv"), "--out", str(tmp_path / "o")]
    missing = runner.invoke(app, [*args[:4], "--train", str(tmp_path / "nope.csv"), *args[6:]],
                            env={"COLUMNS": "200"})
    assert missing.exit_code == 1 and "CSV not found" in missing.output and "Traceback" not in missing.output
    too_long = runner.invoke(app, [*args, "--max-seq-len", "1000"], env={"COLUMNS": "200"})
    assert too_long.exit_code == 1 and "exceeds the model's 64 positions" in too_long.output
    no_model = runner.invoke(app, [*args[:2], "-m", str(tmp_path / "none"), *args[4:]],
                             env={"COLUMNS": "200"})
    assert no_model.exit_code == 1 and "cannot load model" in no_model.output
