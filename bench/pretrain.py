"""Benchmark of ``danmaku pretrain`` against the references, measured in the same run.

1. Instance creation: Google's ``create_pretraining_data.py`` (its
   ``create_training_instances`` + ``write_instance_to_example_files``) vs
   ``danmaku pretrain prepare`` (default sharded mode) on the same real corpus slices
   (built from ../shared/data), Google's defaults (dupe factor 10). Each side runs
   in its own process; its peak RSS (workers included) is reported. Two slice
   sizes show whose memory grows with the input.
2. Training throughput on CPU: sequences/s of ``transformers.BertForPreTraining``
   (torch, AdamW) vs danmaku's training step (keras-hub backbone + Google heads,
   Google's optimizer, real tf.data input), same shape: L4 H256 A4, seq 128,
   batch 32.

    python bench/pretrain.py [--slices-mb 4 16] [--train-steps 10]
    python bench/pretrain.py --gpu          # bench/gpu.sh: BERT-base, seq 128, bf16, MFU

Prints one markdown table (append it to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
VOCAB = SHARED_DATA / "vocab.txt"
CACHE = Path(tempfile.gettempdir()) / "danmaku-bench-pretrain"
WARMUP_STEPS = 5  # untimed: tracing, the shuffle buffer, oneDNN's first-call kernel selection


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


# ---------------------------------------------------------------------------
# children: one measurement each, printed as JSON on the last line
# ---------------------------------------------------------------------------
def child_google(corpus: str, out: str) -> dict:
    sys.path.insert(0, str(REPO))
    import random

    from tests.support.google_reference import create_pretraining_data, full_tokenizer

    cpd = create_pretraining_data()
    start = time.perf_counter()
    tokenizer = full_tokenizer(VOCAB)
    instances = cpd.create_training_instances([corpus], tokenizer, 128, 10, 0.1, 0.15, 20,
                                              random.Random(12345))
    cpd.write_instance_to_example_files(instances, tokenizer, 128, 20, [out])
    seconds = time.perf_counter() - start
    return {"instances": len(instances), "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


def child_dd(corpus: str, out: str) -> dict:
    sys.path.insert(0, str(REPO))
    from danmaku.pretrain.instances import prepare

    start = time.perf_counter()
    summary = prepare(Path(corpus).parent, VOCAB, Path(out))
    seconds = time.perf_counter() - start
    return {"instances": summary.splits["train"].instances, "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


def child_torch(steps: int) -> dict:
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, hidden_act="gelu_new")
    model = BertForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batch, seq = 32, 128
    ids = torch.randint(1000, 8000, (batch, seq))
    labels = torch.full((batch, seq), -100)
    labels[:, 1:21] = ids[:, 1:21]
    nsp = torch.randint(0, 2, (batch,))

    def step() -> None:
        out = model(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids),
                    labels=labels, next_sentence_label=nsp)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(WARMUP_STEPS):
        step()
    before, start = os.times(), time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"seq_per_s": batch * steps / seconds, "threads": torch.get_num_threads(),
            "peak_rss_mb": _peak_rss_mb(), **_cpu_split(before, steps)}


def _cpu_split(before: os.times_result, steps: int) -> dict:
    after = os.times()
    user, system = after.user - before.user, after.system - before.system
    return {"cpu_s_per_step": (user + system) / steps, "kernel_share": system / max(user + system, 1e-9)}


def child_dd_train(instances: str, steps: int, threads: str) -> dict:
    """danmaku's step; ``threads``: "library" (one inter-op thread, one intra-op per core) or "tf"."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(REPO))
    from danmaku.pretrain.config import BertConfig
    from danmaku.pretrain.data import open_instances
    from danmaku.pretrain.train import RunOptions, Trainer, TrainSettings

    inst = open_instances(instances)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(Path(run_dir), BertConfig.preset("small"),
                          TrainSettings(steps=1000, batch_size=32, micro_batch_size=32),
                          RunOptions(cpu_threads=os.cpu_count() if threads == "library" else None),
                          seq=inst.max_seq_length, pred=inst.max_predictions)
        iterator = iter(trainer.dataset(inst.files("train"), 0))
        for _ in range(WARMUP_STEPS):
            trainer.train_step(iterator)
        before, start = os.times(), time.perf_counter()
        for _ in range(steps):
            trainer.train_step(iterator)
        seconds = time.perf_counter() - start
        import tensorflow as tf

        pools = (tf.config.threading.get_inter_op_parallelism_threads(),
                 tf.config.threading.get_intra_op_parallelism_threads())
    return {"seq_per_s": 32 * steps / seconds, "peak_rss_mb": _peak_rss_mb(), "inter_intra": pools,
            **_cpu_split(before, steps)}


# BERT-base training FLOPs per sequence of 128 tokens with 20 masked positions:
# 6 x (matmul params x tokens) + attention scores/values (12 x L x S^2 x H),
# MLM head on 20 positions (transform + tied output) and the pooler/NSP.
def train_flops_per_sequence(layers: int = 12, hidden: int = 768, inter: int = 3072, seq: int = 128,
                             vocab: int = 21128, pred: int = 20) -> float:
    per_token = layers * (4 * hidden * hidden + 2 * hidden * inter)
    attention = layers * 2 * seq * seq * hidden
    head = pred * (hidden * hidden + hidden * vocab) + hidden * hidden + 2 * hidden
    return 6 * (per_token * seq + head) + 3 * 2 * attention


def child_gpu_dd(instances: str, steps: int, batch: int, xla: bool) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, str(REPO))
    import tensorflow as tf

    from danmaku.pretrain.config import BertConfig
    from danmaku.pretrain.data import open_instances
    from danmaku.pretrain.train import RunOptions, Trainer, TrainSettings

    inst = open_instances(instances)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(Path(run_dir), BertConfig.preset("base"),
                          TrainSettings(steps=100_000, batch_size=batch, micro_batch_size=batch),
                          RunOptions(mixed_precision="bf16", xla=xla), seq=inst.max_seq_length,
                          pred=inst.max_predictions)
        iterator = iter(trainer.dataset(inst.files("train"), 0))
        for _ in range(3):
            trainer.train_step(iterator)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(iterator)
        seconds = time.perf_counter() - start
    gpu = tf.config.list_physical_devices("GPU")
    return {"seq_per_s": batch * steps / seconds, "gpus": len(gpu)}


def child_gpu_torch(steps: int, batch: int) -> dict:
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_act="gelu_new")
    model = BertForPreTraining(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    ids = torch.randint(1000, 8000, (batch, 128), device="cuda")
    labels = torch.full((batch, 128), -100, device="cuda")
    labels[:, 1:21] = ids[:, 1:21]
    nsp = torch.randint(0, 2, (batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=ids, token_type_ids=torch.zeros_like(ids),
                        attention_mask=torch.ones_like(ids), labels=labels, next_sentence_label=nsp)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return {"seq_per_s": batch * steps / (time.perf_counter() - start)}


def gpu_main(args: argparse.Namespace) -> None:
    corpus = _slice(args.slices_mb[0])
    out = CACHE / "instances-gpu"
    if not (out / "instances.json").is_file():
        _run_child("danmaku", str(corpus), str(out))
    peak = float(os.environ.get("PEAK_TFLOPS", "989"))  # dense bf16 of an H100/H200 SXM
    flops = train_flops_per_sequence()
    rows = []
    torch_r = _run_child("gpu_torch", str(args.train_steps), str(args.gpu_batch))
    rows.append(("HF torch BertForPreTraining, bf16 autocast", torch_r["seq_per_s"]))
    for xla in (False, True):
        r = _run_child("gpu_dd", str(out), str(args.train_steps), str(args.gpu_batch), str(int(xla)))
        rows.append((f"danmaku, bf16{' + XLA' if xla else ''}", r["seq_per_s"]))
    print(f"BERT-base (L12 H768, vocab 21128), seq 128, batch {args.gpu_batch}, "
          f"{flops / 1e9:.1f} GFLOP/sequence, peak {peak:g} TFLOP/s")
    print("| run | seq/s | MFU | vs HF |")
    print("|---|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate * flops / (peak * 1e12):.1%} | {rate / rows[0][1]:.2f}x |")


def _run_child(*args: str) -> dict:
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "3",
                        "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"child {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def _slice(megabytes: float) -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    from corpus_slice import write_slice

    directory = CACHE / f"corpus-{megabytes:g}mb"
    target = directory / "danmaku_text_pure.txt"
    if not target.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        write_slice(target, int(megabytes * 1_000_000))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices-mb", type=float, nargs="+", default=[4, 16])
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="Training measurements per side (best kept).")
    parser.add_argument("--gpu", action="store_true", help="BERT-base bf16 on a GPU, with MFU.")
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = {"google": lambda: child_google(*rest), "danmaku": lambda: child_dd(*rest),
                  "torch": lambda: child_torch(int(rest[0])),
                  "dd_train": lambda: child_dd_train(rest[0], int(rest[1]), rest[2]),
                  "gpu_torch": lambda: child_gpu_torch(int(rest[0]), int(rest[1])),
                  "gpu_dd": lambda: child_gpu_dd(rest[0], int(rest[1]), int(rest[2]), rest[3] == "1")}[kind]()
        print(json.dumps(result))
        return
    if args.gpu:
        gpu_main(args)
        return

    rows = []
    instances_dir = None
    for mb in (m for m in args.slices_mb if m > 0):
        corpus = _slice(mb)
        with tempfile.TemporaryDirectory() as tmp:
            google = _run_child("google", str(corpus), str(Path(tmp) / "google.tfrecord"))
            out = CACHE / f"instances-{mb:g}mb"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            ours = _run_child("danmaku", str(corpus), str(out))
        instances_dir = instances_dir or out
        g_rate, d_rate = google["instances"] / google["seconds"], ours["instances"] / ours["seconds"]
        rows.append((f"instances/s, {mb:g} MB slice, dupe 10 (peak RSS)",
                     f"{g_rate:,.0f} ({google['peak_rss_mb']:,.0f} MB)",
                     f"{d_rate:,.0f} ({ours['peak_rss_mb']:,.0f} MB)", d_rate / g_rate))
    if instances_dir is None:  # --slices-mb 0: training only, on instances of the 4 MB slice
        instances_dir = CACHE / "instances-4mb"
        if not (instances_dir / "instances.json").is_file():
            _run_child("danmaku", str(_slice(4)), str(instances_dir))
    # alternate the sides so that load on a shared machine hits both alike
    runs: dict[str, list[dict]] = {"torch": [], "library": [], "tf": []}
    for _ in range(args.rounds):
        runs["torch"].append(_run_child("torch", str(args.train_steps)))
        for threads in ("library", "tf"):
            runs[threads].append(_run_child("dd_train", str(instances_dir), str(args.train_steps), threads))
    best = {name: max(results, key=lambda r: r["seq_per_s"]) for name, results in runs.items()}
    torch_r = best["torch"]

    def cell(r: dict) -> str:
        return (f"{r['seq_per_s']:.1f} ({r['peak_rss_mb']:,.0f} MB; {r['cpu_s_per_step']:.2f} CPU-s/step, "
                f"{r['kernel_share']:.0%} kernel)")

    for threads, label in (("library", "one inter-op thread"), ("tf", "TensorFlow's default threads")):
        ours_r = best[threads]
        inter, intra = ours_r["inter_intra"]
        rows.append((f"training seq/s, L4 H256 seq128 batch 32, CPU, {label} (inter {inter or 'auto'}, "
                     f"intra {intra or 'auto'}); best of {args.rounds}", cell(torch_r), cell(ours_r),
                     ours_r["seq_per_s"] / torch_r["seq_per_s"]))

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; "
          "references: Google create_pretraining_data.py / transformers BertForPreTraining (torch)")
    print("| measure | reference | danmaku | danmaku / reference |")
    print("|---|---|---|---|")
    for name, ref, ours_s, ratio in rows:
        print(f"| {name} | {ref} | {ours_s} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
