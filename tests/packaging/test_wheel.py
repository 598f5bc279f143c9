"""The built wheel, installed into a fresh virtualenv, works from an empty directory.

No source tree is on ``sys.path`` there: the wheel is installed with ``--no-deps``
into a new venv whose only view of the dependencies is this environment's
site-packages (added by a ``.pth`` line, which -- unlike a site directory --
does not run this environment's editable-install hook). Every command below
is the console script ``danmaku`` as a user types it.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, SHARED_DATA
from tests.support.mockbili import Catalog, MockBilibili
from tests.support.mockbili.run import FAST

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, text=True)
    (path,) = out.glob("danmaku-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh venv holding only the wheel."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    purelib = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "dependencies.pth").write_text("\n".join(deps) + "\n")
    # pip of this environment installs into the new one: the console script is pip's own.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no source tree in sight
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                    "-q", "--no-deps", "--no-compile", str(wheel)],
                   check=True, capture_output=True, text=True, env=clean)
    return env_dir / "bin"


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
        entry_points = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("entry_points.txt"))
        names = zf.namelist()
    assert {t for t in tops if not t.endswith(".dist-info")} == {"danmaku"}
    assert "danmaku = danmaku.cli.main:main" in entry_points
    assert "dd =" not in entry_points
    assert "danmaku/store/migrations/versions/0001_initial_store.py" in names
    assert "danmaku/embed/meme_phrases.txt" in names


def test_every_stage_runs_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DANMAKU_DATABASE_URL", "DANMAKU_REDIS_URL", "VIRTUAL_ENV")}
    env.update(PATH=f"{installed}{os.pathsep}{env['PATH']}", TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")

    def danmaku(*args: str) -> str:
        done = subprocess.run(["danmaku", *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"danmaku {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    where = subprocess.run([str(installed / "python"), "-c", "import danmaku; print(danmaku.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO / "src") not in where and str(installed.parent) in where
    assert danmaku("--version").strip().startswith("danmaku 0.")

    danmaku("import", "csv", str(FIXTURES / "video_danmaku"))
    danmaku("import", "live", str(FIXTURES / "live_danmaku"))
    assert (work / "danmaku.sqlite").is_file()  # the default store, in the current directory
    stats = danmaku("db", "stats", "--json")
    assert '"danmaku"' in stats
    vocab = SHARED_DATA / "vocab.txt"
    danmaku("corpus", "export", "--vocab", str(vocab), "--out", "corpus")
    danmaku("pretrain", "prepare", "corpus", "--vocab", str(vocab), "--out", "instances",
            "--max-seq-length", "32", "--dupe-factor", "1")
    danmaku("pretrain", "train", "--instances", "instances", "--out", "run", "--preset", "tiny",
            "--steps", "3", "--batch-size", "4", "--log-every", "1")
    assert (work / "run" / "model.ckpt-3.index").is_file()
    (work / "lines.txt").write_text("阿夸\n草\n", encoding="utf-8")
    danmaku("embed", "encode", "-m", "run", "-i", "lines.txt", "-o", "vectors.npy")
    assert (work / "vectors.npy").is_file()

    catalog = Catalog.from_fixture()
    with MockBilibili(catalog) as mock:
        env["DANMAKU_BILIBILI_BASE_URL"] = mock.url
        settings = [arg for name, value in FAST.items() for arg in ("-s", f"{name}={value}")]
        out = danmaku("crawl", "video", "av51364753", "--db", "crawled.sqlite", *settings)
    assert "crawl finished" in out
    report = json.loads(danmaku("crawl", "status", "--db", "crawled.sqlite", "--json"))
    assert report["totals"]["danmaku_new"] == len(catalog.expected_danmaku({51364753})) > 0
