"""`danmaku demo` end to end at a very small size: the report holds this run's numbers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from danmaku.cli.main import app
from tests.conftest import FIXTURES, PYTHONPATH, SHARED_DATA


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """The fixtures' live rooms, and enough real video danmaku (~30 k) that the model generalises."""
    data = tmp_path / "data"
    copied = 0
    for path in sorted((SHARED_DATA / "video_danmaku").rglob("*.csv")):
        if copied >= 30_000:
            break
        (data / "video_danmaku" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / "video_danmaku" / path.parent.name / path.name)
        copied += path.read_bytes().count(b"\n")
    shutil.copytree(FIXTURES / "live_danmaku", data / "live_danmaku")
    for name in ("vocab.txt", "meme_phrases.txt"):
        shutil.copy(SHARED_DATA / name, data / name)
    return data


def table_row(markdown: str, label: str) -> list[float]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [float(cell) for cell in line.strip("|").split("|")[1:]]


def test_demo_runs_end_to_end_and_resumes(small_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["demo", "--data", str(small_data), "--out", str(out), "--minutes", "8", "--steps", "80",
            "--eval-batches", "5", "--dupe-factor", "3", "--task-rows", "150"]
    # bounded by steps, not by the clock, so a slow or busy machine trains as far
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output

    report = (out / "report.md").read_text()
    for picture in ("curves.png", "meme.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({picture})" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2

    # the table holds the numbers this run computed, and training helped on held-out data
    state = json.loads((out / "state.json").read_text())["stages"]
    assert state["train"]["step"] == 80  # the schedule ends at --steps when the budget holds more
    assert state["train"]["sequences"] == 80 * 32
    assert "80 steps of\n32 sequences (2,560 sequences" in report
    before, after = state["evaluate"]["before"], state["evaluate"]["after"]
    assert table_row(report, "initial weights, evaluation set")[0] == pytest.approx(
        before["eval"]["masked_lm_accuracy"], abs=1e-6)
    assert table_row(report, "tuned, evaluation set")[1] == pytest.approx(
        after["eval"]["masked_lm_loss"], rel=1e-5)
    assert after["eval"]["masked_lm_accuracy"] > before["eval"]["masked_lm_accuracy"]
    # the count reference sits beside them, on the same instances
    reference = state["reference"]["rows"]
    for split, label in (("train", "training set"), ("eval", "evaluation set")):
        row = next(line for line in report.splitlines()
                   if line.startswith(f"| bigram counts (reference), {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert float(cells[0]) == pytest.approx(reference[split]["masked_lm_accuracy"], abs=1e-6)
        assert float(cells[1]) == pytest.approx(reference[split]["masked_lm_loss"], rel=1e-5)
        assert cells[2:] == ["-", "-"]
        assert reference[split]["examples"] == before[split]["examples"] > 0
    assert 0.05 < reference["eval"]["masked_lm_accuracy"] < reference["train"]["masked_lm_accuracy"]
    # messages fit the demo: it continues by itself, and no float noise
    assert "same command again" not in result.output
    assert not re.search(r"\d\.\d{5,}", result.output), result.output
    assert after["eval"]["masked_lm_loss"] < before["eval"]["masked_lm_loss"] - 1.0

    # the model's vocabulary: Google's tokens that the training file uses, and the model is sized to it
    vocab = state["vocab"]
    kept = (out / "model" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = json.loads((out / "model" / "bert_config.json").read_text())
    assert vocab["trimmed"] and len(kept) == vocab["size"] == config["vocab_size"]
    assert vocab["size"] < vocab["source_size"] == 21128
    assert f"Its vocabulary is the {vocab['size']:,} tokens of Google's Chinese one (21,128)" in report
    assert (out / "vocab.txt").read_bytes() == (out / "instances" / "vocab.txt").read_bytes()

    # the held-out file holds live broadcasts only, and none of them is in the training file
    corpus = Path(state["corpus"]["dir"])
    eval_docs = (corpus / "danmaku_text_pure.eval.txt").read_text().strip().split("\n\n")
    assert len(eval_docs) == state["corpus"]["manifest"]["files"]["danmaku_text_pure.eval.txt"]["documents"]
    assert sorted(state["corpus"]["eval_rooms"]) == sorted(
        int(p.name) for p in (small_data / "live_danmaku").iterdir())
    train_text = (corpus / "danmaku_text_pure.txt").read_text()
    assert not any(doc in train_text for doc in eval_docs)

    # the downstream task: both models and the majority floor, numbers from this run's evaluation
    downstream = state["tasks"]["report"]
    assert downstream["models"] == ["initial weights", "trained"]
    section = report[report.index("## Downstream task"):report.index("## Data")]
    for scores in downstream["scores"]:
        accuracy = scores["finetuned"]["accuracy"]
        assert f"| {scores['model']} | {accuracy['value']:.3f} [{accuracy['low']:.3f}, " in section
    assert "| majority class |" in section
    manifest = json.loads((Path(state["tasks"]["task_dir"]) / "manifest.json").read_text())
    assert max(sum(manifest["counts"][s][c] for s in ("train", "dev", "test"))
               for c in manifest["selection"]["chosen"]) <= 150

    # a second run reuses every finished stage
    again = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    # import, corpus, vocab, instances, reference, train, evaluate, embed, downstream, report
    assert len(re.findall(r"reused", again.output)) == 10


def test_tensorflow_starts_quietly():
    """TF's absl start-up lines (oneDNN, CUDA drivers) are written by C++ to fd 2: a real process."""
    code = ("from danmaku.cli.pretrain import quiet_tensorflow; quiet_tensorflow(); "
            "import tensorflow as tf; print(int(tf.constant(2) * 3))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TF_")}
                          | {"PYTHONPATH": PYTHONPATH})
    assert proc.returncode == 0 and proc.stdout.strip() == "6", proc.stderr
    assert proc.stderr == "", proc.stderr


def test_demo_without_data_is_a_clear_error(tmp_path: Path):
    result = CliRunner().invoke(app, ["demo", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "lacks video_danmaku" in result.output


def test_report_states_every_choice_of_the_recipe(tmp_path: Path):
    """The schedule line names each setting that differs from Google's, read from the run's recipe."""
    from danmaku.demo.pipeline import DemoSettings, _schedule_line, _vocab_line
    from danmaku.demo.recipe import STABLE_DECAY, WIDE_SIN, ZERO_LAST

    settings = DemoSettings(data=tmp_path, out=tmp_path)
    schedule = {"steps": 3435, "steps_per_second": 3.82, "probe": [60, 160]}
    default = _schedule_line(settings, {"recipe": WIDE_SIN.describe(), "schedule": schedule, "step": 3435})
    held = _schedule_line(settings, {"recipe": STABLE_DECAY.describe(), "schedule": schedule, "step": 3435})
    zeroed = _schedule_line(settings, {"recipe": ZERO_LAST.describe(), "schedule": schedule, "step": 3435})
    assert "3.82 steps/s measured over steps 60-160 gave 3,435 steps" in default
    refitted = _schedule_line(settings, {"recipe": STABLE_DECAY.describe(), "step": 3900,
                                         "schedule": {**schedule, "steps": 3900, "timed_steps": 3020}})
    assert ("3.82 steps/s measured over 3,020 steps (from step 60 to the start of the decay, which the total "
            "could move until then) gave 3,900 steps") in refitted
    assert "stddev 0.1 (Google's 0.02), the position table started sinusoidal; Google's loss" in default
    assert "started at 0" not in default
    assert "warm-up to 0.001, then linear decay to 0 (Google's schedule and AdamWeightDecay" in default
    assert ("warm-up to 0.001, held there, then linear decay to 0 over the last 20% of the steps (Google's "
            "decays over all of them; Google's AdamWeightDecay") in held
    assert ("the position table started sinusoidal, the last layer's residual-branch outputs (attention "
            "output, feed-forward output) started at 0; Google's loss") in zeroed
    assert _vocab_line({"vocab_size": 21128}) == "Its vocabulary is Google's Chinese one (21,128 tokens)."
    assert _vocab_line({}) == _vocab_line({"vocab_size": 21128})  # a run from before the choice
    assert _vocab_line({"vocab_size": 11374}).startswith(
        "Its vocabulary is the 11,374 tokens of Google's Chinese one (21,128) that the training file uses")
