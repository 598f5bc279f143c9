"""The learning-rate schedule fitted to a time budget (``pretrain/budget.py``).

Oracles: Google's schedule (``WarmupLinearDecay``, itself checked against
Google's TF1 code in test_train.py) for the same total; the arithmetic of
the decision; runs whose fitted total does not depend on the machine's speed
(a budget too small for more than the probe, or one the cap binds).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from danmaku.pretrain.budget import (
    PROBE_FROM,
    PROBE_TO,
    SCHEDULE_FILE,
    FittedSchedule,
    fit_steps,
    fitted_learning_rate,
    load_schedule,
    refit,
    save_schedule,
)
from danmaku.pretrain.config import BertConfig
from danmaku.pretrain.instances import InstanceOptions, prepare
from danmaku.pretrain.optimization import WarmupLinearDecay
from danmaku.pretrain.train import RunError, RunOptions, TrainSettings, train
from tests.conftest import FIXTURES, SHARED_DATA

CONFIG = BertConfig(vocab_size=21128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=128)


def test_fitted_schedule_is_googles_for_its_total():
    fitted = fitted_learning_rate(1e-3, 500, 30)
    steps = np.arange(0, 520)
    google = np.asarray(WarmupLinearDecay(1e-3, 500, 30)(steps))
    np.testing.assert_array_equal(np.asarray(fitted(steps)), google)
    fitted.set_total(240)
    google = np.asarray(WarmupLinearDecay(1e-3, 240, 30)(steps))
    np.testing.assert_array_equal(np.asarray(fitted(steps)), google)
    assert float(fitted(240)) == 0.0 and float(fitted(29)) == pytest.approx(1e-3 * 29 / 30)


def test_stable_then_decay_schedule():
    """decay_fraction f < 1: Google's warm-up, then the peak held until the last f of the steps, then
    linear to 0 -- against the piecewise formula in numpy; the fitted schedule is the same function."""
    steps = np.arange(0, 1100)
    expected = np.where(steps < 100, 1e-3 * steps / 100,
                        1e-3 * np.clip((1000 - steps) / 200, 0, 1))
    ours = np.asarray(WarmupLinearDecay(1e-3, 1000, 100, decay_fraction=0.2)(steps))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-9)  # float32 arithmetic
    assert ours[800] == pytest.approx(1e-3) and ours[900] == pytest.approx(5e-4) and ours[1000] == 0
    fitted = fitted_learning_rate(1e-3, 400, 100, 0.2)
    fitted.set_total(1000)
    np.testing.assert_array_equal(np.asarray(fitted(steps)), ours)
    with pytest.raises(ValueError, match=r"decay_fraction must be in \(0, 1\], got 0"):
        WarmupLinearDecay(1e-3, 1000, 100, decay_fraction=0)
    with pytest.raises(RunError, match=r"--decay-fraction must be in \(0, 1\], got 1.5"):
        TrainSettings(decay_fraction=1.5)


def test_fit_steps_arithmetic(tmp_path: Path):
    assert fit_steps(2.0, 0.25, cap=10_000, probe=(20, 60)).steps == 480  # 120 s / 0.25 s
    assert fit_steps(2.0, 0.25, cap=300, probe=(20, 60)).steps == 300  # the cap binds
    assert fit_steps(0.01, 0.25, cap=300, probe=(20, 60)).steps == 60  # never before the probe's end
    decision = fit_steps(15, 0.31, cap=100_000, probe=(20, 60))
    save_schedule(tmp_path, decision)
    assert load_schedule(tmp_path) == decision
    assert load_schedule(tmp_path / "none") is None


def test_refit_moves_the_total_only_before_the_decay(tmp_path: Path):
    probe = fit_steps(10.0, 0.5, cap=10_000, probe=(60, 160))  # 600 s / 0.5 s
    assert (probe.steps, probe.timed_steps, probe.timed_seconds, probe.frozen) == (1200, 100, 50.0, False)
    # 200 more steps in 50 s: 300 steps in 100 s -> 600 s fit 1,800 steps; the decay (last 20%) not begun
    faster = refit(probe, 360, 0.2, 200, 50.0)
    assert (faster.steps, faster.timed_steps, faster.timed_seconds) == (1800, 300, 100.0)
    assert not faster.frozen
    assert faster.seconds_per_step == pytest.approx(1 / 3)
    assert refit(probe, 360, 1.0, 200, 50.0) == probe  # Google's schedule: the probe's decision stays
    short = replace(probe, steps=300)  # its decay began at step 240: frozen as it is
    assert refit(short, 360, 0.2, 200, 50.0) == replace(short, frozen=True)
    # at the decay's start the total freezes, and nothing moves it after
    due = refit(faster, 1440, 0.2, 10, 100.0)
    assert (due.steps, due.frozen, due.timed_steps) == (1800, True, 300)
    assert refit(due, 1500, 0.2, 100, 1.0) == due
    # the machine slowed down: the new total puts the decay's start behind this step, so it begins now
    slower = refit(probe, 900, 0.2, 740, 1480.0)  # 2 s per step from here
    assert slower.frozen and slower.steps == 1125 and slower.decay_start(0.2) == 900
    # the cap and the probe's end still bind
    assert refit(fit_steps(10.0, 0.5, cap=1300, probe=(60, 160)), 360, 0.2, 200, 50.0).steps == 1300
    # the timings survive a resume; a file written before the refit existed reads as the probe's
    save_schedule(tmp_path, faster)
    assert load_schedule(tmp_path) == faster
    old = {"steps": 67, "budget_minutes": 5.0, "seconds_per_step": 0.5, "probe": [20, 60], "cap": 500}
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps(old))
    assert load_schedule(tmp_path) == FittedSchedule(67, 5.0, 0.5, (20, 60), 500, 40, 20.0, False)


def test_a_held_peak_is_refitted_to_the_later_steps(instances: Path, tmp_path: Path):
    """Steps after the probe are made slower: the decay must begin earlier than the probe fitted."""
    notices: list[str] = []

    def slow_after_probe(step: int, _row: dict) -> None:
        if step > PROBE_TO:
            time.sleep(0.05)

    result = train(tmp_path / "run", instances_dir=instances, config=CONFIG,
                   settings=_settings(steps=100_000, fit_minutes=0.5, decay_fraction=0.2),
                   options=RunOptions(log_every=1, save_every=10**9), on_step=slow_after_probe,
                   on_notice=notices.append)
    probed = int(re.search(r"([\d,]+) steps fit 0.5 min", notices[0]).group(1).replace(",", ""))
    assert "refitted to the speed of later steps" in notices[0]
    decision = json.loads((tmp_path / "run" / SCHEDULE_FILE).read_text())
    assert result.stopped == "done" and result.step == result.total_steps == decision["steps"] < probed
    assert decision["frozen"] and decision["timed_steps"] > PROBE_TO - PROBE_FROM
    began = next(n for n in notices if n.startswith("the decay begins at step"))
    start = int(re.search(r"step ([\d,]+):", began).group(1).replace(",", ""))
    assert start == pytest.approx(0.8 * result.total_steps, abs=1)
    lr_at = {h["step"]: h["learning_rate"] for h in result.history}
    held = [lr_at[s] for s in range(10, start - 1)]  # after the 5-step warm-up, to the decay's start
    assert held == pytest.approx([1e-3] * len(held), rel=1e-6)
    assert lr_at[result.step] == 0.0


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("instances")
    prepare(FIXTURES / "pretrain_corpus", SHARED_DATA / "vocab.txt", out, opts=InstanceOptions(dupe_factor=1),
            workers=1)
    return out


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{"batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 5, **kw})


def test_a_fitted_run_decays_to_zero_where_the_budget_ends(instances: Path, tmp_path: Path):
    notices: list[str] = []
    # 0.06 s of budget holds no more than the probe on any machine: the total is the probe's end
    result = train(tmp_path / "run", instances_dir=instances, config=CONFIG,
                   settings=_settings(steps=500, fit_minutes=0.001), options=RunOptions(log_every=5),
                   on_notice=notices.append)
    assert (result.stopped, result.step, result.total_steps, result.sequences) == ("done", PROBE_TO, PROBE_TO,
                                                                                    4 * PROBE_TO)
    decision = json.loads((tmp_path / "run" / SCHEDULE_FILE).read_text())
    assert (decision["steps"], decision["probe"]) == (PROBE_TO, [PROBE_FROM, PROBE_TO])
    assert decision["seconds_per_step"] > 0
    assert result.history[-1]["learning_rate"] == 0.0  # Google's decay ended at the last step
    assert result.history[0]["learning_rate"] == pytest.approx(1e-3 * (1 - 5 / 500))  # before the fit
    assert any("steps fit 0.001 min of training" in n for n in notices)
    assert (tmp_path / "run" / f"model.ckpt-{PROBE_TO}.index").is_file()
    again = train(tmp_path / "run")  # resuming a finished run: nothing to do
    assert (again.step, again.total_steps, again.history) == (PROBE_TO, PROBE_TO, [])


def test_a_resumed_run_keeps_the_recorded_decision(instances: Path, tmp_path: Path):
    run = tmp_path / "run"
    paused = train(run, instances_dir=instances, config=CONFIG, settings=_settings(steps=500, fit_minutes=5),
                   options=RunOptions(max_minutes=0))
    assert (paused.stopped, paused.step) == ("time budget", 1)
    # the decision a killed run had written after its probe: the resumed one follows it, no new probe
    save_schedule(run, FittedSchedule(67, 5.0, 0.5, (20, 60), 500))
    result = train(run, options=RunOptions(log_every=1))
    assert (result.stopped, result.step, result.total_steps) == ("done", 67, 67)
    assert result.history[-1]["learning_rate"] == 0.0
    lr_at = {h["step"]: h["learning_rate"] for h in result.history}
    assert lr_at[36] == pytest.approx(1e-3 * (1 - 36 / 67), rel=1e-6)
    assert json.loads((run / SCHEDULE_FILE).read_text())["steps"] == 67  # not probed again


def test_bad_settings_are_refused():
    with pytest.raises(RunError, match="fit-minutes must be positive"):
        _settings(steps=10, fit_minutes=0)
    with pytest.raises(RunError, match="beta_2"):
        _settings(steps=10, beta_2=1.0)
