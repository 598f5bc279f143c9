"""Which checkpoint a resumed run starts from: the newest one that reads back whole.

``tf.train.CheckpointManager`` hands out the newest checkpoint it listed,
whatever state its files are in: a truncated data file or a damaged index then
ends the run with a traceback (``IndexError: Read less bytes than requested``,
``DataLossError``), and a lost ``checkpoint`` state file makes it start over at
step 0 although every checkpoint is still there. Here the candidates are the
manager's list plus every ``ckpt-N`` on disk, newest step first, and each is
read back in full -- index, every tensor, TensorFlow's CRC32C of each -- before
it is restored: the first that passes is used, the damaged newer ones are named
in one notice, and when none passes the error names every checkpoint and what
is wrong with it. Reading a checkpoint twice on resume costs about as much as
restoring it (seconds for BERT-base with Adam slots); a run resumes rarely.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from danmaku.pretrain.train import RunError

_FILE = re.compile(r"^(.+-(\d+))\.(?:index|data-\d+-of-\d+)$")


class NoIntactCheckpoint(RunError):
    """Checkpoints exist but none reads back whole."""


def candidates(directory: Path, listed: Iterable[str] = ()) -> list[Path]:
    """Checkpoint prefixes, highest step first: those ``listed`` (the manager's) and any on disk."""
    directory = Path(directory)
    found: dict[Path, int] = {}
    for prefix in listed:
        match = _FILE.match(Path(prefix).name + ".index")
        if match:
            found[directory / match.group(1)] = int(match.group(2))
    if directory.is_dir():
        for path in directory.iterdir():
            match = _FILE.match(path.name)
            if match:
                found[directory / match.group(1)] = int(match.group(2))
    return sorted(found, key=lambda prefix: found[prefix], reverse=True)


def damage(prefix: Path) -> str | None:
    """What is wrong with the checkpoint at ``prefix``; None when every tensor reads back."""
    import tensorflow as tf

    prefix = Path(prefix)
    index = prefix.with_name(prefix.name + ".index")
    data = sorted(p.name for p in prefix.parent.glob(prefix.name + ".data-*"))
    if not index.is_file():
        return f"{index.name} is missing"
    if not data:
        return f"the data file {prefix.name}.data-* is missing"
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)  # checks the tensor's CRC32C
    except IndexError:  # what the reader raises when a data file ends early
        return f"{' or '.join(data)} is truncated (shorter than {index.name} says)"
    except (tf.errors.OpError, ValueError, RuntimeError) as err:
        message = " ".join((getattr(err, "message", None) or str(err)).split())
        return f"{prefix.name} does not read back: {message[:300]}"
    return None


def newest_intact(directory: Path, listed: Iterable[str] = (),
                  on_notice: Callable[[str], None] | None = None) -> Path | None:
    """The prefix to restore: the newest intact checkpoint; None when there is none at all.

    Newer damaged ones are reported in one ``on_notice`` line; ``NoIntactCheckpoint``
    (a ``RunError``) names each checkpoint and its damage when all are damaged.
    """
    damaged: list[tuple[Path, str]] = []
    for prefix in candidates(directory, listed):
        why = damage(prefix)
        if why is None:
            if damaged and on_notice:
                names = ", ".join(p.name for p, _ in damaged)
                verb = "is" if len(damaged) == 1 else "are"
                on_notice(f"checkpoint {names} {verb} damaged ({_reasons(damaged)}); resuming from "
                          f"{prefix.name} instead")
            return prefix
        damaged.append((prefix, why))
    if damaged:
        raise NoIntactCheckpoint(f"no intact checkpoint in {directory}: {_reasons(damaged)}; "
                                 f"delete {directory} to train this run again from its start")
    return None


def _reasons(damaged: list[tuple[Path, str]]) -> str:
    return "; ".join(why for _, why in damaged)
