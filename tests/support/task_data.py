"""A small real downstream task: a few uploaders of the shared video sample, through the real tools.

Four uploaders with 6-13 videos and 2-3 k danmaku each (``../shared/data/video_danmaku``)
are copied, imported with ``danmaku import csv``'s library and turned into an
uploader task by ``danmaku.tasks.make`` with the corpus vocab filter -- the path a
user takes, at a size a test can fine-tune on in seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import SHARED_DATA

VOCAB = SHARED_DATA / "vocab.txt"
UPLOADERS = ("1498668", "3772162", "389052754", "36690170")


def copy_uploaders(dest: Path, mids: tuple[str, ...] = UPLOADERS) -> Path:
    """``dest/{mid}/*.csv`` for the given uploaders (a video CSV tree)."""
    for mid in mids:
        shutil.copytree(SHARED_DATA / "video_danmaku" / mid, dest / mid)
    return dest


def real_store(root: Path, url: str | None = None, mids: tuple[str, ...] = UPLOADERS):
    """An engine on a store holding the uploaders' danmaku (SQLite under ``root`` by default)."""
    from danmaku.importers.video_csv import import_video_csv
    from danmaku.store.db import make_engine

    engine = make_engine(url or f"sqlite:///{root / 'store.sqlite'}")
    import_video_csv(engine, copy_uploaders(root / "video_danmaku", mids), workers=1)
    return engine


def real_task(root: Path, *, max_per_class: int = 400, seed: int = 12345) -> Path:
    """``root/task``: the uploader task of the four uploaders (train/dev/test.csv + manifest)."""
    from danmaku.tasks.make import TaskOptions, make_task

    engine = real_store(root)
    make_task(engine, "uploader", root / "task", vocab=VOCAB,
              options=TaskOptions(max_per_class=max_per_class, seed=seed))
    engine.dispose()
    return root / "task"
