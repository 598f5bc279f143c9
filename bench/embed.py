"""Benchmark: `danmaku embed encode` vs transformers feature extraction, and `danmaku embed serve` under load.

Same model on both sides: a randomly initialised BERT-base-sized model
(L12 H768 A12, Chinese vocabulary; no real weights exist here) written once in
HF format, read by `danmaku embed` through ``load_bert`` and by
``transformers.BertModel.from_pretrained``. Same texts (the study's 92 meme
phrases), same batch size, same max_seq_len (32), CPU, in the same run.

Each side runs in its own worker process (torch and TensorFlow in one process
slow each other down), loads the model once, warms up, and then times one
pass per round; rounds alternate between the sides so that load from other
users of the machine hits both alike. The median pass counts.

References: ``pipeline("feature-extraction")`` with ``batch_size`` (what
"transformers feature extraction" usually means), and a plain loop of
tokenizer + ``BertModel`` on batches in input order. Both end with the
REDUCE_MEAN pooling, and the vectors are checked against ours.

The service part starts ``danmaku embed serve`` twice -- token-bounded batches with a
bounded queue (the defaults) and the text-count batching it had before (no token or
queue bound) -- and drives both from here with a bounded load generator: C clients,
each sending a fixed number of requests of 4 phrases back to back, for C = 1, 8, 32,
128, one server after the other at each level. It reports answered requests/s,
p50/p99 latency of the answered requests, 503s, the mean batch and the server's
peak RSS so far (VmHWM).

Thread pools that spin-wait (torch's OpenMP) suffer most when other work
shares the cores, so the comparison is also made with one thread per side.

    python bench/embed.py [--batch-size 32] [--rounds 5] [--threads 2 1] [--only serve] [--service-rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PHRASES_FILE = SHARED / "data" / "meme_phrases.txt"
VOCAB = SHARED / "data" / "vocab.txt"
MAX_SEQ_LEN = 32
sys.path.insert(0, str(REPO))


def phrases() -> list[str]:
    return [line.strip() for line in PHRASES_FILE.open(encoding="utf-8") if line.strip()]


def make_model(out: Path) -> None:
    """A random BERT-base in HF format (config.json, model.safetensors, vocab.txt)."""
    import keras

    from danmaku.pretrain.checkpoints import google_weights, write_hf
    from danmaku.pretrain.config import BertConfig
    from danmaku.pretrain.model import BertPretrainer

    keras.utils.set_random_seed(0)
    config = BertConfig.preset("base")
    write_hf(google_weights(BertPretrainer.from_bert_config(config)), config, VOCAB, out)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- workers (each in its own process) ----------------------------------------
def limit_threads(threads: int) -> None:
    """Before TensorFlow/torch start: their thread pools read these variables."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if threads == 1 else "2"


def dd_worker(conn, model_dir: str, batch_size: int, threads: int) -> None:
    limit_threads(threads)
    import numpy as np

    from danmaku.embed.encoder import EncoderSettings
    from danmaku.embed.models import load_encoder
    from danmaku.embed.npy_stream import NpyAppender
    from danmaku.embed.stream import encode_stream

    texts = phrases()
    encoder, _ = load_encoder(model_dir, EncoderSettings(batch_size=batch_size, max_seq_len=MAX_SEQ_LEN))
    out = Path(tempfile.mkdtemp()) / "v.npy"

    def one_pass() -> float:
        started = time.perf_counter()
        with NpyAppender(out, encoder.output_shape) as writer:
            encode_stream(encoder, texts, writer)
        return time.perf_counter() - started

    one_pass()  # warm-up: traces the graph
    conn.send(("ready", np.load(out)))
    while conn.recv() == "run":
        conn.send(one_pass())
    conn.send(peak_rss_mib())


def hf_worker(conn, model_dir: str, batch_size: int, threads: int, mode: str) -> None:
    limit_threads(threads)
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(threads)

    texts = phrases()
    model = transformers.BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    tokenizer = transformers.BertTokenizerFast(str(Path(model_dir) / "vocab.txt"), do_lower_case=True)

    def mean(hidden, mask) -> np.ndarray:
        m = mask[..., None].astype(np.float32)
        return (hidden * m).sum(axis=1) / m.sum(axis=1)

    if mode == "pipeline":
        pipe = transformers.pipeline("feature-extraction", model=model, tokenizer=tokenizer, device="cpu",
                                     tokenize_kwargs={"truncation": True, "max_length": MAX_SEQ_LEN})

        # batched pipeline outputs keep the batch's padding: average over each text's own tokens
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_SEQ_LEN)["input_ids"]]

        def run() -> np.ndarray:
            out = pipe(texts, batch_size=batch_size)
            return np.stack([np.asarray(o[0][:n], dtype=np.float32).mean(axis=0)
                             for o, n in zip(out, lengths, strict=True)])
    else:
        def run() -> np.ndarray:
            rows = []
            with torch.inference_mode():
                for start in range(0, len(texts), batch_size):
                    batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                      max_length=MAX_SEQ_LEN, return_tensors="pt")
                    hidden = model(**batch).last_hidden_state.numpy()
                    rows.append(mean(hidden, batch["attention_mask"].numpy()))
            return np.concatenate(rows)

    vectors = run()  # warm-up
    conn.send(("ready", vectors))
    while conn.recv() == "run":
        started = time.perf_counter()
        run()
        conn.send(time.perf_counter() - started)
    conn.send(peak_rss_mib())


def bench_encode(model_dir: Path, batch_size: int, rounds: int,
                 threads: int) -> list[tuple[str, float, float, float]]:
    ctx = mp.get_context("spawn")
    common = (str(model_dir), batch_size, threads)
    sides = {
        "danmaku embed encode": (dd_worker, common),
        "transformers pipeline(feature-extraction)": (hf_worker, (*common, "pipeline")),
        "transformers BertModel loop": (hf_worker, (*common, "loop")),
    }
    workers, vectors, times = {}, {}, {name: [] for name in sides}
    for name, (target, args) in sides.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, *args))
        proc.start()
        _, vectors[name] = parent.recv()
        workers[name] = (proc, parent)
    import numpy as np

    ours = vectors["danmaku embed encode"]
    for name, v in vectors.items():
        print(f"max |danmaku - {name}| = {np.abs(ours - v).max():.2e}", file=sys.stderr)
    for _ in range(rounds):
        for name, (_, conn) in workers.items():
            time.sleep(0.5)  # let the previous side's threads go idle
            conn.send("run")
            times[name].append(conn.recv())
    rows = []
    n = len(ours)
    for name, (proc, conn) in workers.items():
        conn.send("stop")
        rss = conn.recv()
        proc.join(timeout=60)
        rows.append((name, n / statistics.median(times[name]), n / min(times[name]), rss))
    return rows


# -- the service ------------------------------------------------------------------
# Two batching policies of the same server, driven alike: today's token-bounded batches with a
# bounded queue (the defaults), and the text-count batching the service had before (no token
# bound, no queue bound).
SERVICE_MODES = {
    "token-bounded (default)": [],
    "text-count (before)": ["--max-batch-tokens", "0", "--max-queued-tokens", "0"],
}
LEVELS = ((1, 32), (8, 8), (32, 4), (128, 2))  # (clients, requests per client)


async def load(url: str, clients: int, per_client: int, texts: list[str]) -> tuple[list[float], int, float]:
    """Latencies of the answered requests, how many got 503, and the wall time."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    latencies: list[float] = []
    refused = 0

    async def client(k: int, session) -> None:
        nonlocal refused
        for r in range(per_client):
            start = (k * 7 + r * 4) % (len(texts) - 4)
            t0 = time.perf_counter()
            body = {"id": r, "texts": texts[start : start + 4]}
            async with session.post(f"{url}/encode", json=body) as resp:
                await resp.read()
                if resp.status == 503:
                    refused += 1
                    continue
                assert resp.status == 200, await resp.text()
            latencies.append(time.perf_counter() - t0)

    async with ClientSession(timeout=ClientTimeout(total=600), connector=TCPConnector(limit=0)) as session:
        await client(0, session)  # warm-up request
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client(k, session) for k in range(clients)))
        return latencies, refused, time.perf_counter() - started


def percentile_ms(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def status(url: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/status", timeout=30) as response:
        return json.load(response)["load"]


def peak_rss_of(pid: int) -> float:
    """VmHWM: the process's peak RSS so far, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_service(model_dir: Path, batch_size: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "danmaku", "embed", "serve", "-m", str(model_dir), "--port", "0",
         "--batch-size", str(batch_size), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            found.append(line)
            if "serving on" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(600):
        proc.kill()
        raise SystemExit("service did not start:\n" + "".join(found))
    return proc, re.search(r"http://[0-9.]+:\d+", "".join(found)).group()


def bench_service(model_dir: Path, batch_size: int, rounds: int) -> dict[str, list[tuple]]:
    """Both modes' servers up at once (an idle one costs nothing); at each level every round runs
    one mode, then the other, alternating which goes first, so that load from other users of the
    machine hits both alike. Latencies of all rounds are pooled."""
    servers = {mode: start_service(model_dir, batch_size, extra) for mode, extra in SERVICE_MODES.items()}
    rows: dict[str, list[tuple]] = {mode: [] for mode in servers}
    texts = phrases()
    try:
        for clients, per_client in LEVELS:
            seen = {mode: ([], 0, 0.0, 0, 0) for mode in servers}  # latencies, 503s, seconds, texts, batches
            for r in range(rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for mode in order:
                    _, url = servers[mode]
                    before = status(url)
                    latencies, refused, seconds = asyncio.run(load(url, clients, per_client, texts))
                    after = status(url)
                    lat, ref, sec, txt, bat = seen[mode]
                    seen[mode] = (lat + latencies, ref + refused, sec + seconds,
                                  txt + after["texts"] - before["texts"],
                                  bat + after["batches"] - before["batches"])
            for mode, (lat, ref, sec, txt, bat) in seen.items():
                rows[mode].append((clients, len(lat) + ref, len(lat) / sec, percentile_ms(lat, 0.50),
                                   percentile_ms(lat, 0.99), ref, txt / max(1, bat),
                                   peak_rss_of(servers[mode][0].pid)))
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            proc.wait(timeout=120)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 2, 1],
                        help="thread counts to compare at (default: all cores, then 1)")
    parser.add_argument("--service-rounds", type=int, default=2,
                        help="rounds per concurrency level and batching mode (alternating order)")
    parser.add_argument("--only", choices=("all", "encode", "serve"), default="all",
                        help="run only the encode comparison or only the service part")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = Path(tempfile.mkdtemp(prefix="danmaku-bench-embed-"))
    try:
        model_dir = work / "bert-base-random"
        print("writing a random BERT-base (HF format) ...", file=sys.stderr)
        ctx = mp.get_context("spawn")
        maker = ctx.Process(target=make_model, args=(model_dir,))
        maker.start()
        maker.join()
        n = len(phrases())
        for threads in args.threads if args.only in ("all", "encode") else []:
            print(f"\n## encode: {n} meme phrases, BERT-base random, batch {args.batch_size}, "
                  f"max_seq_len {MAX_SEQ_LEN}, CPU, {threads} thread(s), median of {args.rounds} "
                  f"(load average {os.getloadavg()[0]:.1f})")
            rows = bench_encode(model_dir, args.batch_size, args.rounds, threads)
            ours = rows[0][1]
            print("| | sentences/s (median) | best | ratio danmaku / this (median) | peak RSS MiB |")
            print("|---|---:|---:|---:|---:|")
            for name, median, best, rss in rows:
                print(f"| {name} | {median:.1f} | {best:.1f} | {ours / median:.2f}x | {rss:.0f} |")
        if args.only in ("all", "serve"):
            print(f"\n## serve: requests of 4 phrases, batch {args.batch_size}, max_seq_len {MAX_SEQ_LEN}, "
                  f"{args.service_rounds} alternating rounds per level, load generator in this process "
                  f"(load average {os.getloadavg()[0]:.1f})")
            service_rows = bench_service(model_dir, args.batch_size, args.service_rounds)
            print("| batching | clients | requests | requests/s | p50 ms | p99 ms | 503s "
                  "| mean batch (texts) | peak RSS MiB |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for clients_index in range(len(LEVELS)):
                for mode, mode_rows in service_rows.items():
                    clients, count, rps, p50, p99, refused, batch, rss = mode_rows[clients_index]
                    print(f"| {mode} | {clients} | {count} | {rps:.1f} | {p50:.0f} | {p99:.0f} | {refused} "
                          f"| {batch:.1f} | {rss:.0f} |")
            print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
