"""A learning-rate schedule that ends when a time budget does.

Google's schedule -- linear warm-up, then linear decay to 0 at
``num_train_steps`` -- needs the step count up front. A run given minutes
instead ("15 minutes on this machine") cannot know it: the demo's old fixed
4,000-step schedule met 1,700-3,500 steps in 15 minutes on 2-core machines, so
its rate never decayed below 57-13% of the peak and the run ended mid-schedule.

The decision (``fit_steps``): time the steps ``PROBE_FROM`` to ``PROBE_TO``
(the first steps include tracing the step and filling the shuffle buffer;
the probe lies inside any warm-up of at least ``PROBE_TO`` steps, whose rate
does not depend on the total), then fix

    total = min(cap, floor(budget_seconds / seconds_per_step))

-- the steps this machine's measured steady rate fits into the budget -- and
write it to ``RUN_DIR/schedule.json``. From then on the run is bound by steps,
not by the clock: a resumed run (after a kill or a ``--max-minutes`` pause)
reads the file and keeps the same total, so it follows the schedule the
uninterrupted run would; a machine that slows down later finishes late
rather than cutting the decay short. Only a run stopped before the probe
ended probes again. A schedule that holds its peak before the decay
(``decay_fraction`` < 1) goes on timing its steps until the decay begins and
moves the total to what they fit (``refit``): no rate already used changes,
and the file keeps the timings, so a resumed run refits from all of them.
The decay ends within a few seconds of the budget on a steady machine
(tracing and the first steps are not in the measured rate).

``FittedWarmupLinearDecay`` is ``WarmupLinearDecay`` with the total in a
variable, so the compiled step reads the decision without being traced again;
with the variable at ``N`` it is the same function as Google's for ``N`` steps.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

SCHEDULE_FILE = "schedule.json"
# Measured (2026-12-01, the demo's one-layer model on 2 cores): steps 20-60 ran at 192 seq/s,
# the run's median was 174 -- the first steps eat batches the input pipeline prefetched while
# the step was traced -- so a 15-minute schedule took 16.6 min of training. From step 60 on
# the rate is the steady one; 100 steps average out the 10-step jitter.
PROBE_FROM, PROBE_TO = 60, 160


@dataclass(frozen=True)
class FittedSchedule:
    """The recorded decision: ``steps`` from ``seconds_per_step`` over steps ``probe``.

    ``timed_steps``/``timed_seconds``: every step timed so far (the probe, then
    the stable phase of a ``decay_fraction`` < 1 schedule, over all runs of
    it; ``refit``); ``frozen``: the decay has begun, the total no longer moves.
    """

    steps: int
    budget_minutes: float
    seconds_per_step: float
    probe: tuple[int, int]
    cap: int
    timed_steps: int = 0
    timed_seconds: float = 0.0
    frozen: bool = False

    def decay_start(self, decay_fraction: float) -> float:
        return self.steps * (1.0 - decay_fraction)


def probe_window(start: int) -> tuple[int, int]:
    """The steps timed by a run (re)starting at ``start`` without a decision."""
    return start + PROBE_FROM, start + PROBE_TO


def fit_steps(budget_minutes: float, seconds_per_step: float, cap: int, probe: tuple[int, int]
              ) -> FittedSchedule:
    """How many steps fit the budget at the measured rate (at least the probe's own, at most ``cap``)."""
    fitted = math.floor(60.0 * budget_minutes / max(seconds_per_step, 1e-9))
    steps = max(min(cap, fitted), probe[1])
    timed = probe[1] - probe[0]
    return FittedSchedule(steps, budget_minutes, seconds_per_step, probe, cap, timed,
                          seconds_per_step * timed)


def refit(schedule: FittedSchedule, step: int, decay_fraction: float, steps: int, seconds: float
          ) -> FittedSchedule:
    """Add ``steps`` timed over ``seconds`` and, before the decay begins, fit the total to them.

    Why: in a warm-up/stable/decay schedule (``decay_fraction`` < 1) the rate
    is the peak from the warm-up's end to the decay's start whatever the total,
    so the total may move until then without changing any rate already used.
    The probe alone misjudged 2-core machines by 10-15% either way (a demo
    fitted 2,939 steps that took 17.0 min of its 15; another 3,644 that took
    14.3 with its pauses): their speed drifts over minutes. So the total is
    ``fit_steps``' rule over every step timed so far, and freezes at the step
    where the decay begins (at once, if the new total puts that step behind
    ``step``). Google's schedule (``decay_fraction`` 1) is never refitted.
    """
    if schedule.frozen or decay_fraction >= 1.0:
        return schedule
    if step >= schedule.decay_start(decay_fraction):
        return replace(schedule, frozen=True)
    timed_steps, timed_seconds = schedule.timed_steps + steps, schedule.timed_seconds + seconds
    per_step = timed_seconds / max(timed_steps, 1)
    total = fit_steps(schedule.budget_minutes, per_step, schedule.cap, schedule.probe).steps
    frozen = step >= total * (1.0 - decay_fraction)
    if frozen:  # the measured speed says the decay is due: it begins now
        total = min(schedule.cap, max(total, math.ceil(step / (1.0 - decay_fraction))))
    return replace(schedule, steps=total, seconds_per_step=per_step, timed_steps=timed_steps,
                   timed_seconds=timed_seconds, frozen=frozen)


def load_schedule(run_dir: Path) -> FittedSchedule | None:
    path = Path(run_dir) / SCHEDULE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    probe = tuple(data["probe"])
    timed = int(data.get("timed_steps", probe[1] - probe[0]))  # written before the refit: the probe's
    return FittedSchedule(int(data["steps"]), float(data["budget_minutes"]), float(data["seconds_per_step"]),
                          probe, int(data["cap"]), timed,
                          float(data.get("timed_seconds", float(data["seconds_per_step"]) * timed)),
                          bool(data.get("frozen", False)))


def save_schedule(run_dir: Path, schedule: FittedSchedule) -> Path:
    path = Path(run_dir) / SCHEDULE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(schedule), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def fitted_learning_rate(init_lr: float, num_train_steps: int, num_warmup_steps: int,
                         decay_fraction: float = 1.0) -> Any:
    """A ``FittedWarmupLinearDecay`` (imports Keras/TensorFlow only when called)."""
    return _schedule_class()(init_lr, num_train_steps, num_warmup_steps, decay_fraction)


_CLASS: Any = None


def _schedule_class() -> Any:
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import tensorflow as tf
    from keras import ops

    from danmaku.pretrain.optimization import WarmupLinearDecay

    class FittedWarmupLinearDecay(WarmupLinearDecay):
        """Google's warm-up + linear decay; the end step is a variable (``set_total``)."""

        def __init__(self, init_lr: float, num_train_steps: int, num_warmup_steps: int = 0,
                     decay_fraction: float = 1.0) -> None:
            super().__init__(init_lr, num_train_steps, num_warmup_steps, decay_fraction)
            self.total = tf.Variable(float(max(self.num_train_steps, 1)), trainable=False, dtype=tf.float32,
                                     name="dd_schedule_total")

        def set_total(self, steps: int) -> None:
            self.num_train_steps = int(steps)
            self.total.assign(float(max(steps, 1)))

        def __call__(self, step: Any) -> Any:
            return self._rate(ops.cast(step, "float32"), ops.convert_to_tensor(self.total))

    _CLASS = FittedWarmupLinearDecay
    return _CLASS
