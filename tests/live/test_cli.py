"""``danmaku live record`` / ``status`` as a user runs them: signals, kill -9, help, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.store.db import make_engine
from tests.conftest import PYTHONPATH, REPO
from tests.live.support import LIVE_FIXTURES, expected_broadcasts, stored_broadcasts
from tests.support.livemock import Frame, Gate, LiveMock, build_room

BUSY = [LIVE_FIXTURES / "1603600" / "2020-9-19.txt"]


def start(args: list[str], mock: LiveMock, db: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DANMAKU_BILIBILI_SESSDATA"}
    env.update({"PYTHONPATH": PYTHONPATH, "DANMAKU_BILIBILI_BASE_URL": mock.url, "PYTHONUNBUFFERED": "1"})
    command = [sys.executable, "-c", "from danmaku.cli.main import main; main()", "live", "record", *args,
               "--db", db, "--api-interval", "0", "--log-every", "0.1"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"recorder gave up or timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def count(db: str) -> int:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM danmaku")).scalar()
    except Exception:  # not created yet
        return 0
    finally:
        engine.dispose()


def test_sigterm_commits_everything_received(tmp_path: Path) -> None:
    room = build_room(1603600, BUSY, last_open=True)
    db = f"sqlite:///{tmp_path / 's.sqlite'}"
    log = tmp_path / "log"
    with LiveMock([room]) as mock:
        # nothing is committed by the clock before the signal: it must flush what it holds
        process = start(["1603600", "--flush-seconds", "600", "--export-txt", str(tmp_path / "txt")],
                        mock, db, log)
        wait_for(lambda: f"{len(room.expected)} received" in log.read_text(), process, log)
        assert count(db) == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]
    engine = make_engine(db)
    assert stored_broadcasts(engine, 1603600) == expected_broadcasts(room)
    day_files = sorted((tmp_path / "txt" / "1603600").glob("*.txt"))
    assert day_files[-1].read_text(encoding="utf-8").endswith("V2\n")
    assert "Traceback" not in log.read_text() and "stored" in log.read_text()


def test_kill_9_loses_at_most_the_last_batch_and_a_restart_duplicates_nothing(tmp_path: Path) -> None:
    probe = build_room(1603600, BUSY, last_open=True, per_frame=3)
    gate_at = probe.broadcasts[-1].first_frame + 12
    before = sum(f.chats for f in probe.frames[:gate_at] if isinstance(f, Frame))
    # times shifted so that the broadcast's danmaku before the gate are a moment ago: the
    # restarted recorder finds it recent, as it would after a real crash
    room = build_room(1603600, BUSY, last_open=True, per_frame=3, anchor=before - 1)
    gate = Gate()
    room.frames.insert(gate_at, gate)
    order = [(s.sent_at_ms, str(s.uid), s.text) for s in room.expected]
    db = f"sqlite:///{tmp_path / 's.sqlite'}"
    log = tmp_path / "log"
    with LiveMock([room]) as mock:
        process = start(["1603600", "--flush-seconds", "0.2"], mock, db, log)
        wait_for(lambda: count(db) >= before, process, log)
        gate.opened.set()  # the rest flows in, and the recorder dies in the middle of it
        time.sleep(0.05)
        process.kill()
        process.wait(30)
    engine = make_engine(db)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT sent_at_ms, sender, text FROM danmaku ORDER BY id")).all()
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    assert before <= len(stored) <= len(order)
    assert sorted(map(tuple, stored)) == sorted(order[:len(stored)])  # a prefix: whole batches only
    # restarted while the broadcast goes on, the server sending its frames again
    again = build_room(1603600, BUSY, last_open=True, per_frame=3, offset_ms=room.offset_ms)
    again.frames = again.frames[again.broadcasts[-1].first_frame:]
    again.live = True
    with LiveMock([again]) as mock:
        process = start(["1603600"], mock, db, log)
        wait_for(lambda: mock.done[1603600].is_set() and count(db) == len(order), process, log)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    assert stored_broadcasts(engine, 1603600) == expected_broadcasts(room)


def test_status_shows_rooms_broadcasts_and_counts(tmp_path: Path) -> None:
    from danmaku.importers.live_chat import import_live_chat
    from danmaku.live.status import live_status

    db = f"sqlite:///{tmp_path / 's.sqlite'}"
    engine = make_engine(db)
    import_live_chat(engine, LIVE_FIXTURES)
    report = live_status(engine)
    assert {r["room_id"]: (r["broadcasts"], r["danmaku"], r["recorded"]) for r in report["rooms"]} == {
        1603600: (2, 540, 0), 10001030: (6, 34, 0)}
    result = CliRunner().invoke(app, ["live", "status", "--db", db])
    assert result.exit_code == 0 and "1603600" in result.output and "540" in result.output
    json_out = CliRunner().invoke(app, ["live", "status", "--db", db, "--json"])
    assert '"total_rooms": 2' in json_out.output
    empty = CliRunner().invoke(app, ["live", "status", "--db", f"sqlite:///{tmp_path / 'e.sqlite'}"])
    assert "no live broadcasts" in empty.output


def test_help_has_an_example_for_every_command() -> None:
    for command in ("record", "status"):
        result = CliRunner().invoke(app, ["live", command, "--help"])
        assert result.exit_code == 0 and "Example: danmaku live " + command in " ".join(result.output.split())


@pytest.mark.parametrize(("args", "message"), [
    ([], "give ROOM ids"),
    (["abc"], "not a room id"),
    (["--rooms-file", "missing.txt"], "is not a file"),
    (["1", "--flush-seconds", "0"], "must be positive"),
])
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["live", "record", *args, "--db", f"sqlite:///{tmp_path / 's.sqlite'}"])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_rooms_file(tmp_path: Path) -> None:
    from danmaku.live.rooms import RoomsError, read_rooms_file

    path = tmp_path / "rooms.txt"
    path.write_text("# vtubers\n21452505\nhttps://live.bilibili.com/22637261?spm=1  # her\n\n"
                    "live.bilibili.com/h5/88\n")
    assert read_rooms_file(path) == [21452505, 22637261, 88]
    path.write_text("21452505\nbilibili.com/video/BV1xx\n")
    with pytest.raises(RoomsError, match=r"rooms.txt:2: not a room id"):
        read_rooms_file(path)
