"""Bad entries, bad bytes, kills and races: the import goes on, tells, and stores exactly once.

Real faults on real files: dangling and looping symlinks, a folder named like a
data file, files and folders the importing user cannot read (as root, the
import runs without the capabilities that let root read anything), Windows line
ends and BOMs, a 50 MB line, kill -9 of a real import with worker processes,
and two imports of one tree at the same time. Each result is compared with a
clean import of the readable files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from danmaku.importers.live_chat import import_live_chat
from danmaku.importers.run import StrictModeError
from danmaku.importers.video_csv import import_video_csv
from danmaku.store.db import make_engine
from danmaku.store.models import Reject, Run
from tests.conftest import FIXTURES, PYTHONPATH, SHARED_DATA
from tests.importers.test_import import store_digest

VIDEO = FIXTURES / "video_danmaku"
LIVE = FIXTURES / "live_danmaku"
# Without these capabilities root is refused like any other user (setpriv: util-linux).
UNPRIVILEGED = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def cli(*args: str, check: bool = True, unprivileged: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "COLUMNS": "200"}
    done = subprocess.run([*(UNPRIVILEGED if unprivileged else []), sys.executable, "-m", "danmaku", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def rejects(engine) -> list[tuple[str, int, str]]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(Reject.file, Reject.line, Reject.reason)).all())


def clean_digest(tmp_path: Path, tree: Path, importer=import_video_csv) -> tuple[int, str]:
    engine = make_engine(f"sqlite:///{tmp_path / f'clean-{tree.name}.sqlite'}")
    importer(engine, tree)
    return store_digest(engine)


def test_broken_entries_are_rejects_and_the_import_goes_on(db_url, tmp_path):
    good = tmp_path / "good"
    shutil.copytree(VIDEO, good)
    tree = tmp_path / "tree"
    shutil.copytree(VIDEO, tree)
    folder = tree / "1473830"
    (folder / "111.csv").symlink_to(tmp_path / "nowhere.csv")  # dangling
    (folder / "222.csv").symlink_to(folder / "222.csv")  # a loop
    (folder / "333.csv").mkdir()  # a folder named like a file
    engine = make_engine(db_url)
    summary = import_video_csv(engine, tree, workers=1)
    assert summary.files_failed == 3 and summary.files_imported == 5
    assert store_digest(engine) == clean_digest(tmp_path, good)
    assert rejects(engine) == [("1473830/111.csv", 0, "broken link"),
                               ("1473830/222.csv", 0, "symlink loop"),
                               ("1473830/333.csv", 0, "not a file (a folder)")]
    again = import_video_csv(engine, tree, workers=1)  # re-run: nothing twice, the broken ones retried
    assert again.files_skipped == 5 and again.files_failed == 3 and again.rows == 0
    assert store_digest(engine) == clean_digest(tmp_path, good)
    with pytest.raises(StrictModeError, match="111.csv: broken link"):
        import_video_csv(engine, tree, workers=1, strict=True)


def test_unreadable_files_and_folders_are_reported_not_skipped_silently(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(VIDEO, tree)
    (tree / "1473830" / "53078595.csv").chmod(0)
    (tree / "349991143").chmod(0)
    db = tmp_path / "x.sqlite"
    try:
        done = cli("import", "csv", str(tree), "--db", str(db), "--workers", "2", unprivileged=True)
        strict = cli("import", "csv", str(tree), "--db", str(tmp_path / "s.sqlite"), "--strict",
                     check=False, unprivileged=True)
    finally:
        (tree / "1473830" / "53078595.csv").chmod(0o644)
        (tree / "349991143").chmod(0o755)
    assert "1473830/53078595.csv: unreadable (permission denied)" in done.stdout + done.stderr
    assert "349991143/: unreadable (permission denied)" in done.stdout + done.stderr
    engine = make_engine(f"sqlite:///{db}")
    assert rejects(engine) == [("1473830/53078595.csv", 0, "unreadable (permission denied)"),
                               ("349991143/", 0, "unreadable (permission denied)")]
    stats = json.loads(cli("db", "stats", "--json", "--db", str(db)).stdout)
    assert stats["rejected_by_reason"] == {"unreadable (permission denied)": 2}
    readable = tmp_path / "readable"
    shutil.copytree(VIDEO, readable, ignore=shutil.ignore_patterns("53078595.csv", "349991143"))
    assert store_digest(engine) == clean_digest(tmp_path, readable)
    assert strict.returncode != 0 and "Traceback" not in strict.stderr


def test_live_import_reports_bad_entries_too(db_url, tmp_path):
    tree = tmp_path / "live"
    shutil.copytree(LIVE, tree)
    (tree / "10001030" / "2021-5-1.txt").symlink_to(tmp_path / "gone.txt")
    (tree / "10001030" / "2021-5-2.txt").mkdir()
    engine = make_engine(db_url)
    summary = import_live_chat(engine, tree)
    assert summary.files_failed == 2
    assert [r[2] for r in rejects(engine)] == ["broken link", "not a file (a folder)"]
    assert store_digest(engine) == clean_digest(tmp_path, LIVE, import_live_chat)


def test_windows_files_give_the_rows_of_the_originals(db_url, tmp_path):
    for kind, source, importer in (("csv", VIDEO, import_video_csv), ("live", LIVE, import_live_chat)):
        windows = tmp_path / f"windows-{kind}"
        for path in sorted(source.rglob("*.*")):
            target = windows / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
        engine = make_engine(db_url if kind == "csv" else f"sqlite:///{tmp_path / 'w-live.sqlite'}")
        summary = importer(engine, windows)
        assert summary.rejected == 0
        assert store_digest(engine) == clean_digest(tmp_path, source, importer)


def test_a_50_mb_line_is_rejected_and_counted_never_stored(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(VIDEO / "1473830", tree / "1473830")
    huge = tree / "1473830" / "999.csv"
    huge.write_bytes(b"x" * 50_000_000 + b",1.00000,2020-01-01 00:00:00\nok,2.00000,2020-01-01 00:00:01\n")
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    summary = import_video_csv(engine, tree, workers=1)
    assert summary.rejected == 1
    assert rejects(engine) == [("1473830/999.csv", 1, "danmaku longer than 1,000,000 characters")]
    done = cli("corpus", "export", "--db", str(tmp_path / "x.sqlite"), "--vocab",
               str(SHARED_DATA / "vocab.txt"), "--out", str(tmp_path / "corpus"))
    assert "Traceback" not in done.stderr
    corpus = tmp_path / "corpus" / "danmaku_text_pure.txt"
    longest = max(len(line) for line in corpus.open(encoding="utf-8"))
    assert longest < 1000


def test_killed_import_leaves_no_workers_and_its_run_is_marked_interrupted(tmp_path):
    db = tmp_path / "k.sqlite"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    proc = subprocess.Popen([sys.executable, "-m", "danmaku", "import", "csv",
                             str(SHARED_DATA / "video_danmaku"), "--db", str(db), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(children) < 2:
        time.sleep(0.2)
        children = _children(proc.pid)
    assert len(children) >= 2, "the import never started its workers"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "workers outlived the killed import"
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(select(Run.status)).scalars().all() == ["running"]
    import_live_chat(engine, LIVE)  # any next run closes the stale one
    with engine.connect() as conn:
        assert conn.execute(select(Run.status).order_by(Run.id)).scalars().all() == ["interrupted", "done"]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_imports_of_one_tree_at_once_store_it_once(db_url, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(VIDEO, tree)
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    cmd = [sys.executable, "-m", "danmaku", "import", "csv", str(tree), "--db", db_url, "--workers", "1",
           "--batch-rows", "20"]
    make_engine(db_url).dispose()  # migrate first: two processes must not both create the schema
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("Traceback" not in err for _, err in outputs)
    assert store_digest(make_engine(db_url)) == clean_digest(tmp_path, VIDEO)
