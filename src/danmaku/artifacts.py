"""Every file and folder the package writes to disk, by name, and how they are staged.

One place names them, so a corpus, an instance set, a training run and an
export are found by the same names wherever they are read or written:

* a corpus folder: ``danmaku_text_pure.txt`` (+ ``danmaku_text_pure.eval.txt``) and
  ``manifest.json`` (``danmaku.corpus.manifest``);
* an instance set: ``instances.json``, ``vocab.txt`` and TFRecord shards
  (``danmaku.pretrain.instances``);
* a training run: ``run.json``, ``bert_config.json``, ``vocab.txt``, checkpoints,
  ``initial/`` and Google's ``model.ckpt-N`` (``danmaku.pretrain.train``).

Each folder kind has a typed manifest class (``CorpusManifest``,
``InstancesManifest``, ``RunManifest``) that reads it, writes it atomically
(temporary file, fsync, rename) and refuses a folder made with other settings
in one sentence, instead of each stage hand-rolling that check.

Folders that are written as a whole are first written to a hidden staging
folder beside their final place and renamed into place when complete. A
staging folder carries the host and process id that write it, so the next
writer in the same place removes those whose process is gone (a ``kill -9``
leaves one behind) and never one that is still being written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from danmaku.processes import pid_alive

CORPUS_TRAIN_FILE = "danmaku_text_pure.txt"
CORPUS_EVAL_FILE = "danmaku_text_pure.eval.txt"
CORPUS_MANIFEST = "manifest.json"
INSTANCES_MANIFEST = "instances.json"
RUN_MANIFEST = "run.json"
RUN_CHECKPOINTS = "checkpoints"
RUN_LOGS = "logs"
RUN_INITIAL_DIR = "initial"
GOOGLE_CONFIG = "bert_config.json"
VOCAB = "vocab.txt"


def google_checkpoint(step: int) -> str:
    """The prefix of Google's TF1 checkpoint of a step (``model.ckpt-N``), as bert-as-service reads it."""
    return f"model.ckpt-{step}"



class ArtifactMismatch(ValueError):
    """A folder holds an artifact made with other settings than the ones given."""


class Manifest:
    """The JSON manifest of one kind of artifact folder (see the subclasses)."""

    NAME: ClassVar[str]
    FORMAT: ClassVar[str]
    WHAT: ClassVar[str]  # how a message names the artifact: "a corpus", "instances", ...
    MISMATCH: ClassVar[str] = "{folder} holds {what} made with other {keys}; {hint}"

    @classmethod
    def path(cls, folder: str | Path) -> Path:
        return Path(folder) / cls.NAME

    @classmethod
    def exists(cls, folder: str | Path) -> bool:
        return cls.path(folder).is_file()

    @classmethod
    def read(cls, folder: str | Path) -> dict[str, Any] | None:
        """The manifest, or None when it is missing, unreadable or of another format."""
        try:
            with open(cls.path(folder), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("format") == cls.FORMAT else None

    @classmethod
    def write(cls, folder: str | Path, data: Mapping[str, Any]) -> Path:
        """Write atomically: a reader sees the old manifest or the new one, never half of one."""
        path = cls.path(folder)
        tmp = path.with_name(f".{cls.NAME}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"format": cls.FORMAT, **data}, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return path

    @classmethod
    def require_same(cls, folder: str | Path, settings: Mapping[str, Any], keys: Iterable[str],
                     hint: str, normalise: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                     ) -> dict[str, Any] | None:
        """The folder's manifest if it was made with these settings (None: no manifest yet).

        ``normalise`` brings an older manifest up to date first (settings added
        since get their defaults). ``ArtifactMismatch`` names the settings that
        differ and says what to do (``hint``).
        """
        if not cls.exists(folder):
            return None
        old = cls.read(folder)
        if old is None:
            raise ArtifactMismatch(f"{cls.path(folder)} is unreadable or not {cls.WHAT} manifest; {hint}")
        if normalise is not None:
            old = normalise(old)
        diff = [key for key in keys if old.get(key) != settings.get(key)]
        if diff:
            raise ArtifactMismatch(cls.MISMATCH.format(folder=folder, what=cls.WHAT, keys=", ".join(diff),
                                                      hint=hint))
        return old


class CorpusManifest(Manifest):
    """``manifest.json`` of a corpus folder (``danmaku.corpus.manifest`` builds it)."""

    NAME = CORPUS_MANIFEST
    FORMAT = "danmaku-corpus/1"
    WHAT = "a corpus"


class InstancesManifest(Manifest):
    """``instances.json`` of an instance set (``danmaku.pretrain.instances.prepare``)."""

    NAME = INSTANCES_MANIFEST
    FORMAT = "danmaku-pretrain-instances/1"
    WHAT = "instances"


class RunManifest(Manifest):
    """``run.json`` of a training run (``danmaku.pretrain.train``)."""

    NAME = RUN_MANIFEST
    FORMAT = "danmaku-pretrain-run/1"
    WHAT = "a training run"
    MISMATCH = "{folder} was started with other {keys}; {hint}"


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_STAGING = re.compile(r"^\.danmaku-(?P<what>[a-z]+)-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{12}\.partial$")


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in blocks (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


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
        if match and match["host"] == host and not pid_alive(int(match["pid"])) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed

