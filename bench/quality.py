"""Held-out quality of the demo's from-scratch BERT against wall-clock minutes, with the count reference.

On the shared sample (../shared/data), prepared once as ``danmaku demo`` does
it (import -> corpus with the live broadcasts as eval file -> instances,
dupe factor 5), each candidate recipe (``CANDIDATES``; ``danmaku.demo.recipe``)
trains from scratch for each budget in ``--minutes``, each run in its own
process, then is scored with ``danmaku pretrain eval``'s code on the first
``--eval-batches`` batches of 8 eval instances. The bigram count reference
(``danmaku.pretrain.reference``) is built and scored on exactly the same
instances in the same run: its build time is in the table too.

Throughput of each run: sequences/s (median of the logged windows after the
first), the CPU time split (user/kernel, from ``os.times`` of the child), and
the fraction of the CPU's peak FLOP rate: FLOPs per training sequence counted
from the shape (``train_flops_per_sequence``: matmuls only, forward x 3 for
forward + backward; attention over all 128 positions, the masked-LM head over the
real masked slots only, as the step computes them: 15.3 per sequence on average,
from the instances' manifest), peak
= cores x clock (``/proc/cpuinfo`` MHz) x 2 FMA pipes x fp32 lanes x 2 FLOPs
(lanes from the widest vector flag; AMD's AVX-512 is double-pumped, so 256-bit
lanes there).

    python bench/quality.py --minutes 5 15 30                         # the full grid
    python bench/quality.py --minutes 4 --recipes demo before nodrop  # a screen
    python bench/quality.py --workdir /tmp/q --minutes 4 --reuse      # reuse prepared data

Prints one markdown table (append it to bench/RESULTS.md with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from danmaku.demo.recipe import (  # noqa: E402
    BEFORE,
    DEFAULT,
    NODROP,
    ONE_LAYER,
    STABLE_DECAY,
    TRIMMED,
    WIDE_SIN,
    ZERO_LAST,
    DemoRecipe,
)

CANDIDATES: dict[str, DemoRecipe] = {
    "before": BEFORE,
    "demo": DEFAULT,
    "fit": replace(BEFORE, fit=True),
    "nodrop": NODROP,
    "nodrop-lr2e-3": replace(NODROP, learning_rate=2e-3),
    "nodrop-b16": replace(NODROP, batch_size=16),
    "nodrop-b64": replace(NODROP, batch_size=64, learning_rate=1.5e-3),
    "nodrop-beta0.98": replace(NODROP, beta_2=0.98),
    "nodrop-warm50": replace(NODROP, warmup_steps=50),
    "nodrop-small": replace(NODROP, preset="small", learning_rate=5e-4),
    "nodrop-b16-lr2e-3-warm100": replace(NODROP, batch_size=16, learning_rate=2e-3, warmup_steps=100),
    "sinusoidal": replace(NODROP, position_init="sinusoidal"),  # at Google's 0.02
    "wide": replace(NODROP, initializer_range=0.1),  # every weight drawn at 0.1, random positions
    "wide-sin": WIDE_SIN,
    "wide-sin-lr2e-3": replace(WIDE_SIN, learning_rate=2e-3),
    "wider-sin": replace(WIDE_SIN, initializer_range=0.2),
    "wide-sin-b16": replace(WIDE_SIN, batch_size=16),
    "wide-sin-nsp0": replace(WIDE_SIN, nsp_weight=0.0),
    "one-layer": ONE_LAYER,
    "one-layer-nsp0": replace(ONE_LAYER, nsp_weight=0.0),
    "wide-sin-l3": replace(WIDE_SIN, layers=3),
    "wide-sin-l4": replace(WIDE_SIN, layers=4),
    "zero-last": ZERO_LAST,
    "zero-all": replace(WIDE_SIN, zero_init_layers=2),
    "zero-last-l3": replace(ZERO_LAST, layers=3),
    "zero-last-warm400": replace(ZERO_LAST, warmup_steps=400),
    "stable-decay": STABLE_DECAY,
    "stable-decay-0.5": replace(WIDE_SIN, decay_fraction=0.5),
    "stable-decay-zero-last": replace(STABLE_DECAY, zero_init_layers=1),
    "trimmed": TRIMMED,
    "trimmed-lr1.5e-3": replace(TRIMMED, learning_rate=1.5e-3),
    "trimmed-lr7e-4": replace(TRIMMED, learning_rate=7e-4),
    "trimmed-warm400": replace(TRIMMED, warmup_steps=400),
}
STEP_CAP = 100_000  # fitted runs: the budget decides


# ---------------------------------------------------------------------------
# FLOPs and peak
# ---------------------------------------------------------------------------
def train_flops_per_sequence(config, seq: int, pred: float) -> float:
    """Matmul FLOPs of one training sequence (forward x 3), as danmaku computes it.

    Per layer: Q, K, V, output projections (4 S H^2), scores and weighted sum
    (2 S^2 H), feed-forward (2 S H I); pooler + NSP (H^2 + 2 H); the masked-LM
    head on the ``pred`` real masked slots only (transform H^2, output H V). One
    multiply-add = 2 FLOPs; backward = 2x forward.
    """
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    layers = config.num_hidden_layers
    macs = layers * (4 * seq * h * h + 2 * seq * seq * h + 2 * seq * h * i) + h * h + 2 * h
    macs += pred * (h * h + h * v)
    return 3 * 2 * macs


def cpu_peak_flops() -> tuple[float, str]:
    """cores x GHz x FMA pipes x fp32 lanes x 2, and how it was derived."""
    info = Path("/proc/cpuinfo").read_text()
    cores = os.cpu_count() or 1
    mhz = max(float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz"))
    flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    amd = "AuthenticAMD" in info
    bits = 512 if "avx512f" in flags and not amd else 256 if "avx2" in flags or "avx512f" in flags else 128
    lanes = bits // 32
    peak = cores * mhz * 1e6 * 2 * lanes * 2
    pumped = ", AVX-512 double-pumped" if amd and "avx512f" in flags else ""
    how = (f"{cores} cores x {mhz / 1000:.2f} GHz x 2 FMA pipes x {lanes} fp32 lanes ({bits}-bit{pumped})"
           f" x 2 = {peak / 1e9:.0f} GFLOP/s")
    return peak, how


# ---------------------------------------------------------------------------
# data, prepared as the demo does
# ---------------------------------------------------------------------------
def prepare_data(workdir: Path) -> dict:
    from danmaku.demo import pipeline

    settings = pipeline.DemoSettings(data=SHARED_DATA, out=workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state = pipeline.DemoState.load(workdir / "state.json")
    url = f"sqlite:///{(workdir / 'danmaku.sqlite').resolve()}"

    def say(title: str, event: str, seconds: float) -> None:
        print(f"  {title}: {event} {seconds:.0f} s", file=sys.stderr)

    pipeline._stage(state, "import", "import", lambda: pipeline._import(settings, url), say)
    corpus = pipeline._stage(state, "corpus", "corpus", lambda: pipeline._export(settings, url), say)
    corpus_dir = Path(corpus["dir"])
    instances = pipeline._stage(state, "instances", "instances",
                                lambda: pipeline._instances(settings, corpus_dir, settings.vocab), say)
    trimmed = pipeline._stage(state, "vocab-trimmed", "trim the vocabulary",
                              lambda: pipeline._vocab(settings, corpus_dir, True), say)
    trimmed_instances = pipeline._stage(
        state, "instances-trimmed", "instances (trimmed vocabulary)",
        lambda: pipeline._instances(settings, corpus_dir, Path(trimmed["path"]), "instances-trimmed"), say)
    return {"corpus": corpus["dir"], "instances": instances["dir"],
            "instances_trimmed": trimmed_instances["dir"]}


def instances_for(data: dict, recipe: DemoRecipe) -> str:
    """The recipe's instance set: Google's vocabulary or the training file's part of it."""
    return data["instances_trimmed"] if recipe.trim_vocab else data["instances"]


# ---------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------
def child_train(name: str, budget: str, instances: str, out: str, eval_batches: int) -> dict:
    """One run: ``budget`` is "M min" (fitted schedule) or "N steps" (the schedule spans N steps)."""
    from danmaku.pretrain.data import open_instances
    from danmaku.pretrain.evaluate import evaluate
    from danmaku.pretrain.loading import load_bert, vocab_size_of
    from danmaku.pretrain.train import RunOptions, train

    recipe = CANDIDATES[name]
    config = recipe.model_config(vocab_size_of(Path(instances) / "vocab.txt"))
    amount, unit = budget.split()
    load_before = os.getloadavg()[0]
    times0, began = os.times(), time.monotonic()
    if unit == "steps":  # quality per step: independent of the machine's load
        minutes = None
        steps = int(amount) * 32 // recipe.batch_size  # as many sequences as batch 32 in N steps
        settings = replace(recipe.train_settings(1.0, steps), fit_minutes=None,
                           warmup_steps=recipe.warmup_steps)
        if not recipe.fit:
            raise SystemExit(f"{name} is cut by the clock: give --minutes")
    else:
        minutes = float(amount)
        settings = recipe.train_settings(minutes, STEP_CAP if recipe.fit else 4000)
    result = train(out, instances_dir=instances, config=config, settings=settings,
                   options=RunOptions(max_minutes=None if recipe.fit else minutes, save_every=10**9,
                                      log_every=25))
    train_minutes = (time.monotonic() - began) / 60
    times1 = os.times()
    rows = evaluate(load_bert(out), instances, max_steps=eval_batches)
    inst = open_instances(instances)
    rates = [h["sequences_per_second"] for h in result.history[1:]] or [0.0]
    return {
        "recipe": name, "budget": budget, "minutes": minutes, "train_minutes": train_minutes,
        "steps": result.step,
        "total_steps": result.total_steps, "sequences": result.sequences, "stopped": result.stopped,
        "seq_per_s": statistics.median(rates), "user_s": times1.user - times0.user,
        "sys_s": times1.system - times0.system, "eval": rows["eval"], "train": rows["train"],
        "flops_per_seq": train_flops_per_sequence(config, inst.max_seq_length,
                                                  inst.mean_predictions("train")),
        "load": [load_before, os.getloadavg()[0]],
    }


def child_reference(corpus: str, instances: str, eval_batches: int) -> dict:
    from danmaku.pretrain.reference import reference_metrics

    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    result = reference_metrics(corpus, instances, max_steps=eval_batches)
    return {"seconds": time.perf_counter() - began, "rows": result.rows, "counted": result.counted,
            "load": [load_before, os.getloadavg()[0]]}


def _run_child(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
def table(references: list[dict], runs: list[dict], peak: float) -> str:
    lines = [
        "| recipe | budget | trained min | steps | sequences | eval masked_lm_accuracy "
        "| eval masked_lm_loss | train masked_lm_accuracy | seq/s | kernel CPU | % of peak FLOP/s "
        "| load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for reference in references:
        ref_eval, ref_train = reference["rows"]["eval"], reference["rows"]["train"]
        vocab = "trimmed" if reference["instances"].rstrip("/").endswith("-trimmed") else "Google's"
        lines.append(
            f"| bigram count reference, {vocab} vocabulary (built in {reference['seconds']:.0f} s) |  "
            f"| {reference['seconds'] / 60:.1f} |  | {reference['counted']['lines']:,} lines counted "
            f"| {ref_eval['masked_lm_accuracy']:.4f} | {ref_eval['masked_lm_loss']:.4f} "
            f"| {ref_train['masked_lm_accuracy']:.4f} |  |  |  "
            f"| {reference['load'][0]:.1f}-{reference['load'][1]:.1f} |")
    for r in runs:
        cpu = r["user_s"] + r["sys_s"]
        mfu = 100 * r["seq_per_s"] * r["flops_per_seq"] / peak
        lines.append(
            f"| {r['recipe']} | {r['budget']} | {r['train_minutes']:.1f} | {r['steps']:,} "
            f"| {r['sequences']:,} | **{r['eval']['masked_lm_accuracy']:.4f}** "
            f"| {r['eval']['masked_lm_loss']:.4f} | {r['train']['masked_lm_accuracy']:.4f} "
            f"| {r['seq_per_s']:.1f} | {r['sys_s'] / max(cpu, 1e-9):.0%} | {mfu:.1f} "
            f"| {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="*", default=[5, 15, 30],
                        help="Time budgets: each run's schedule is fitted to it (the demo's way).")
    parser.add_argument("--steps", type=int, nargs="*", default=[],
                        help="Step budgets (of batch 32; other batch sizes train as many sequences) "
                             "instead: quality per step, which load on a shared machine does not change.")
    parser.add_argument("--skip-reference", action="store_true", help="(screens) no reference row")
    parser.add_argument("--recipes", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--eval-batches", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "danmaku-bench-quality")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "train":
            out = child_train(rest[0], rest[1], rest[2], rest[3], int(rest[4]))
        else:
            out = child_reference(rest[0], rest[1], int(rest[2]))
        print(json.dumps(out))
        return

    data = prepare_data(args.workdir)
    peak, how = cpu_peak_flops()
    references = []
    if not args.skip_reference:  # one per instance set in use: the vocabulary changes the masks
        for instances in dict.fromkeys(instances_for(data, CANDIDATES[name]) for name in args.recipes):
            reference = _run_child("reference", data["corpus"], instances, str(args.eval_batches))
            reference["instances"] = instances
            print(f"reference: {json.dumps(reference)}", file=sys.stderr)
            references.append(reference)
    budgets = [f"{n} steps" for n in args.steps] if args.steps else [f"{m:g} min" for m in args.minutes]
    runs = []
    for budget in budgets:
        for name in args.recipes:
            out = args.workdir / "runs" / f"{name}-{budget.replace(' ', '')}-{int(time.time())}"
            run = _run_child("train", name, budget, instances_for(data, CANDIDATES[name]), str(out),
                             str(args.eval_batches))
            print(f"run: {json.dumps(run)}", file=sys.stderr)
            runs.append(run)
            with open(args.workdir / "runs.jsonl", "a") as log:
                log.write(json.dumps(run) + "\n")
    print(table(references, runs, peak))
    print(f"\nPeak: {how}. Eval: first {args.eval_batches} batches of 8 instances of each split.")


if __name__ == "__main__":
    main()
