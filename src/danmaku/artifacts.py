"""Every file and folder the package writes to disk, by name, and how they are staged.

One place names them, so a corpus, an instance set, a training run and an
export are found by the same names wherever they are read or written:

* a corpus folder: ``danmaku_text_pure.txt`` (+ ``danmaku_text_pure.eval.txt``) and
  ``manifest.json`` (``danmaku.corpus.manifest``);
* an instance set: ``instances.json``, ``vocab.txt`` and TFRecord shards
  (``danmaku.pretrain.instances``);
* a training run: ``run.json``, ``bert_config.json``, ``vocab.txt``, checkpoints,
  ``initial/`` and Google's ``model.ckpt-N`` (``danmaku.pretrain.train``).

Folders that are written as a whole are first written to a hidden staging
folder beside their final place and renamed into place when complete. A
staging folder carries the host and process id that write it, so the next
writer in the same place removes those whose process is gone (a ``kill -9``
leaves one behind) and never one that is still being written.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from pathlib import Path

CORPUS_TRAIN_FILE = "danmaku_text_pure.txt"
CORPUS_EVAL_FILE = "danmaku_text_pure.eval.txt"
CORPUS_MANIFEST = "manifest.json"
INSTANCES_MANIFEST = "instances.json"
RUN_MANIFEST = "run.json"
GOOGLE_CONFIG = "bert_config.json"
VOCAB = "vocab.txt"
RUN_INITIAL_DIR = "initial"

_STAGING = re.compile(r"^\.danmaku-(?P<what>[a-z]+)-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{12}\.partial$")


def staging_dir(parent: Path, what: str) -> Path:
    """A new, empty hidden staging folder in ``parent`` owned by this process."""
    if not re.fullmatch(r"[a-z]+", what):
        raise ValueError(f"staging kind must be lowercase letters, got {what!r}")
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".danmaku-{what}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.partial"
    path.mkdir()
    return path


def clean_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in ``parent`` left by dead processes of this host; returns them."""
    if not parent.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for entry in parent.iterdir():
        match = _STAGING.match(entry.name)
        if match and match["host"] == host and not _alive(int(match["pid"])) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
