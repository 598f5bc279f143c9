"""An error a user can cause is one clear line on stderr, never a traceback (unless --debug)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PYTHONPATH, SHARED_DATA


def danmaku(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "COLUMNS": "300"}
    env.pop("DANMAKU_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "danmaku", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_an_unreachable_store_is_one_line_without_the_password(tmp_path):
    url = "postgresql://someone:s3cr3t-pw@127.0.0.1:9/nothing"
    done = danmaku("db", "stats", "--db", url)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "s3cr3t-pw" not in done.stdout + done.stderr
    assert "error: cannot open the store postgresql+psycopg://someone:***@127.0.0.1:9/nothing" in done.stderr
    debug = danmaku("--debug", "db", "stats", "--db", url)
    assert "Traceback" in debug.stderr and "StoreUnavailable" in debug.stderr


@pytest.mark.parametrize("option", ["--uploader", "--room"])
def test_an_id_too_large_for_the_store_is_a_usage_error(tmp_path, option):
    done = danmaku("corpus", "export", "--db", str(tmp_path / "x.sqlite"), "--vocab",
                   str(SHARED_DATA / "vocab.txt"), option, "99999999999999999999999")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not an id" in done.stderr


def test_a_missing_file_is_one_line(tmp_path):
    done = danmaku("embed", "encode", "-m", str(tmp_path / "no-model"), "-i", str(tmp_path / "in.txt"),
                   "-o", str(tmp_path / "out.npy"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("error")]) == 1
