"""Live recorder speed: packet decoding, and an end-to-end recording of 100 rooms into SQLite.

    PYTHONPATH=$PWD/src:$PWD nice -n 10 python bench/live.py [--danmaku 100000] [--rooms 100] [--append]

1. Decoding (per CPU second of one thread), on every real danmaku of
   ``../shared/data/live_danmaku`` built into realistic ``DANMU_MSG`` commands
   (``tests/support/livemock``: the 17-element ``info`` array, ``dm_v2``) and
   packed 10 packets to a websocket message, repeated up to ``--danmaku``.
   Reference: what any client must do at the least -- the header walk
   (``struct``), decompression and ``json.loads`` of every packet (stdlib only).
   Then ``iter_packets`` + ``parse_command`` to ``Chat`` objects (the recorder's
   path), on danmaku-only traffic and on traffic where half the packets are
   other commands (gifts, entries, protobuf rank lists). Goal: >= 100 k danmaku/s.
2. A recording: ``danmaku live record --rooms-file`` (a subprocess) of
   ``--rooms`` rooms served by the local mock (this process, its own thread),
   each playing one real room's days, into a fresh SQLite store; timed from the
   start of the command to the last row committed. Reference: ``danmaku import
   live`` of the same rows, written as the community's text tree, into another
   fresh SQLite store, in the same run. Peak RSS of the recorder from
   ``/proc/PID/status`` (VmHWM).

Prints one table; ``--append`` adds it to ``bench/RESULTS.md`` under ``## live``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import date
from pathlib import Path

import brotli

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from sqlalchemy import create_engine, text  # noqa: E402

from danmaku.importers.live_chat import import_live_chat  # noqa: E402
from danmaku.live.messages import Chat, parse_command  # noqa: E402
from danmaku.live.protocol import iter_packets  # noqa: E402
from danmaku.store.db import make_engine  # noqa: E402
from tests.support.livemock import LiveMock, build_room, commands  # noqa: E402
from tests.support.livemock.script import read_day_files  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "live_danmaku"
PER_MESSAGE = 10


def real_danmaku() -> list[tuple[int, int, str, str]]:
    """(ms, uid, uname, text) of every danmaku of the shared live-chat data."""
    out = []
    for room in sorted(p for p in DATA.iterdir() if p.is_dir()):
        items, names = read_day_files(sorted(room.glob("*.txt")))
        out += [(d.sent_at_ms, int(d.sender), names.get(int(d.sender), "u"), d.text) for d in items]
    return out


def messages(total: int, ver: int, noise: bool) -> tuple[list[bytes], int]:
    """Websocket messages holding ``total`` danmaku (and as many other commands if ``noise``)."""
    import random

    rng = random.Random(7)
    lines = real_danmaku()
    packets = []
    for i in range(total):
        ms, uid, uname, text_ = lines[i % len(lines)]
        command = commands.danmu_msg(ms + i, uid, uname, text_, rnd=rng.randrange(2**31))
        packets.append(commands.message(command))
        if noise:
            packets.append(commands.message(rng.choice(commands.noise(rng, 1))))
    step = PER_MESSAGE
    return [commands.bundle(packets[i:i + step], ver) for i in range(0, len(packets), step)], total


def reference_decode(data: bytes) -> int:
    """Header walk + decompression + json.loads of every packet, nothing else (stdlib)."""
    n = 0
    stack = [data]
    while stack:
        buf = stack.pop()
        offset = 0
        while offset < len(buf):
            total, header, ver, op, _ = struct.unpack_from(">IHHII", buf, offset)
            body = buf[offset + header: offset + total]
            if ver == 2:
                stack.append(zlib.decompress(body))
            elif ver == 3:
                stack.append(brotli.decompress(body))
            elif op == 5:
                json.loads(body)
                n += 1
            offset += total
    return n


def recorder_decode(data: bytes) -> int:
    n = 0
    for packet in iter_packets(data):
        if packet.op == 5 and type(parse_command(packet.body)) is Chat:
            n += 1
    return n


def best_rate(fn, bodies: list[bytes], count: int, repeat: int = 3) -> tuple[float, float]:
    """(best CPU seconds of this thread, danmaku per CPU second) over ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        for body in bodies:
            fn(body)
        best = min(best, time.thread_time() - started)
    return best, count / best


def bench_decoding(total: int) -> list[tuple]:
    rows = []
    for ver, name in ((3, "brotli"), (2, "zlib")):
        bodies, n = messages(total, ver, noise=False)
        assert sum(recorder_decode(b) for b in bodies) == n
        ref_s, ref = best_rate(reference_decode, bodies, n)
        ours_s, ours = best_rate(recorder_decode, bodies, n)
        mb = sum(map(len, bodies)) / 1e6
        rows.append((f"{name}: decompress + json.loads only (reference)",
                     f"{n:,} danmaku, {len(bodies):,} messages, {mb:.1f} MB", ref_s,
                     f"{ref / 1e3:,.0f} k danmaku/CPU-s", 1.0))
        rows.append((f"{name}: iter_packets + parse_command -> Chat", f"{n:,} danmaku", ours_s,
                     f"{ours / 1e3:,.0f} k danmaku/CPU-s", ours / ref))
    bodies, n = messages(total // 2, 3, noise=True)
    ref_s, ref = best_rate(reference_decode, bodies, 2 * n)
    ours_s, ours = best_rate(recorder_decode, bodies, n)
    rows.append(("brotli, half other commands: json.loads all (reference)", f"{2 * n:,} packets", ref_s,
                 f"{2 * n / ref_s / 1e3:,.0f} k packets/CPU-s", 1.0))
    rows.append(("brotli, half other commands: recorder", f"{2 * n:,} packets, {n:,} danmaku", ours_s,
                 f"{2 * n / ours_s / 1e3:,.0f} k packets/CPU-s, {ours / 1e3:,.0f} k danmaku/CPU-s",
                 ref_s / ours_s))
    return rows


def bench_recording(rooms: int) -> tuple[float, list[tuple]]:
    day_sets = [sorted(p.glob("*.txt")) for p in sorted(DATA.iterdir()) if p.is_dir()]
    day_sets = [files for files in day_sets if len(read_day_files(files)[0]) > 100]
    mock_rooms = [build_room(9_000_000 + i, day_sets[i % len(day_sets)], seed=i, per_frame=PER_MESSAGE,
                             sc_every=10**9, garbage=False) for i in range(rooms)]
    expected = sum(len(r.expected) for r in mock_rooms)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        db = f"sqlite:///{tmp_path / 'record.sqlite'}"
        make_engine(db).dispose()  # schema in place: the timing is the recording
        rooms_file = tmp_path / "rooms.txt"
        rooms_file.write_text("".join(f"{r.room_id}\n" for r in mock_rooms))
        log = tmp_path / "record.log"
        with LiveMock(mock_rooms) as mock:
            env = {**os.environ, "DANMAKU_BILIBILI_BASE_URL": mock.url,
                   "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
            env.pop("DANMAKU_BILIBILI_SESSDATA", None)
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-c", "from danmaku.cli.main import main; main()", "live", "record",
                 "--rooms-file", str(rooms_file), "--db", db, "--api-interval", "0", "--log-every", "3600"],
                cwd=tmp, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
            engine = create_engine(db)
            peak_mb, stored = 0.0, 0
            while stored < expected:
                if process.poll() is not None:
                    raise SystemExit(log.read_text()[-3000:])
                peak_mb = max(peak_mb, _peak_rss_mb(process.pid))
                time.sleep(0.2)
                with engine.connect() as conn:
                    stored = conn.execute(text("SELECT COUNT(*) FROM danmaku")).scalar()
            wall = time.perf_counter() - started
            cpu = _cpu_s(process.pid)
            peak_mb = max(peak_mb, _peak_rss_mb(process.pid))
            process.send_signal(signal.SIGTERM)
            process.wait(120)
            engine.dispose()
        # the reference: the same rows as a text tree, imported
        tree = tmp_path / "tree"
        for room in mock_rooms:
            folder = tree / str(room.room_id)
            folder.mkdir(parents=True)
            (folder / "2026-1-1.txt").write_text(
                "".join(f"{s.sent_at_ms}:{s.uid}:{s.text}\n" for s in room.expected), encoding="utf-8")
        engine = make_engine(f"sqlite:///{tmp_path / 'import.sqlite'}")
        begun = time.perf_counter()
        imported = import_live_chat(engine, tree)
        import_s = time.perf_counter() - begun
        engine.dispose()
    assert imported.rows == expected
    return peak_mb, [
        (f"danmaku import live, same rows as {rooms} files (reference)", f"{imported.rows:,} rows", import_s,
         f"{imported.rows / import_s:,.0f} rows/s", 1.0),
        (f"danmaku live record, {rooms} rooms -> SQLite (wall, incl. start-up)", f"{expected:,} danmaku",
         wall, f"{expected / wall:,.0f} danmaku/s", (expected / wall) / (imported.rows / import_s)),
        ("  same, CPU time of the recorder process", "", cpu, f"{expected / cpu:,.0f} danmaku/CPU-s", None),
    ]


def _peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table(rows: list[tuple]) -> str:
    lines = ["| case | input | seconds | rate | vs reference |", "|---|---|---:|---:|---:|"]
    for case, what, seconds, rate, ratio in rows:
        shown = "" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {case} | {what} | {seconds:.3f} | {rate} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--danmaku", type=int, default=100_000, help="danmaku to decode")
    parser.add_argument("--rooms", type=int, default=100, help="rooms to record")
    parser.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the data set at {DATA}")
    decoding = bench_decoding(args.danmaku)
    peak_mb, recording = bench_recording(args.rooms)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text_ = "\n\n".join([
        table(decoding), table(recording),
        f"Peak RSS: recorder process ({args.rooms} rooms) {peak_mb:.0f} MB; benchmark process (decoding, "
        f"mock server, import) {self_mb:.0f} MB. Python {platform.python_version()}, brotli "
        f"{brotli.__version__}. Load average {os.getloadavg()[0]:.1f} at the end (the machine is "
        "shared: wall-clock rows vary; CPU-s rows much less).",
    ])
    print(text_)
    if args.append:
        results = REPO / "bench" / "RESULTS.md"
        existing = results.read_text() if results.exists() else "# Benchmark results\n"
        entry = (f"\n## live\n\n### {date.today().isoformat()}, 2-core x86-64 CPU, no GPU\n\n"
                 f"`nice -n 10 python bench/live.py --danmaku {args.danmaku} --rooms {args.rooms}`\n\n"
                 f"{text_}\n")
        results.write_text(existing.rstrip("\n") + "\n" + entry)


if __name__ == "__main__":
    main()
