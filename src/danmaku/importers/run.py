"""What both importers share: the run row around an import, its summary, file problems.

An import commits each batch of files in one transaction together with the
``imported_file`` markers of those files, so a re-run -- or a run after
``kill -9`` -- skips exactly what is stored and redoes exactly what is not. A
file that cannot be read at all (permission denied, a broken or looping link,
a folder where a file should be) is recorded as a reject of line 0 and the
import goes on: one bad entry never stops the rest, and it is retried next time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from danmaku.importers.parsers import BadLine
from danmaku.store.writes import start_run, update_run

PROBLEMS_KEPT = 100


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class ImportSummary:
    """What one import did; printed as the closing table and stored on its run."""

    kind: str
    target: str
    files_seen: int = 0
    files_imported: int = 0
    files_skipped: int = 0
    files_changed: int = 0
    files_failed: int = 0
    sources_created: int = 0
    rows: int = 0
    rejected: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> str:
        return json.dumps(self.as_stats(), ensure_ascii=False)

    def as_stats(self) -> dict:
        data = asdict(self)
        data["problems"] = data["problems"][:PROBLEMS_KEPT]
        return data

    def problem(self, text: str) -> None:
        self.problems.append(text)


class StrictModeError(RuntimeError):
    """Raised under ``--strict`` on the first line or file that cannot be imported."""


@contextlib.contextmanager
def import_run(engine: Engine, kind: str, target: str) -> Iterator[tuple[ImportSummary, int]]:
    """The run row of one import: ``running`` while it works, then done, interrupted or failed."""
    started = time.perf_counter()
    summary = ImportSummary(kind=kind, target=target)
    run_id = start_run(engine, kind, target)
    status = "failed"
    try:
        yield summary, run_id
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        with engine.begin() as conn:
            update_run(conn, run_id, status=status, files=summary.files_imported,
                       sources=summary.sources_created, rows=summary.rows, rejected=summary.rejected,
                       skipped=summary.files_skipped, stats=summary.as_stats(), finished=True)


def entry_problem(path: Path, error: OSError) -> str:
    """Why a directory entry cannot be read as a file (a short reject reason)."""
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(error, PermissionError):
        return "unreadable (permission denied)"
    if isinstance(error, IsADirectoryError):
        return "not a file (a folder)"
    if isinstance(error, FileNotFoundError):
        return "broken link" if os.path.islink(path) else "vanished while importing"
    return f"unreadable ({error.strerror or type(error).__name__})"


def file_problem(reason: str, detail: str) -> BadLine:
    """A whole-file problem as a reject of line 0."""
    return BadLine(0, reason, detail.encode("utf-8", "replace"))


def read_file(path: Path) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, reason) when the entry cannot be read as a regular file.

    Opened without blocking and checked with fstat, so a FIFO or device named
    like a data file is reported instead of hanging the import.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        return None, entry_problem(path, error)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        return None, "not a file (a folder)" if stat.S_ISDIR(mode) else "not a regular file"
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(), None
        except OSError as error:
            return None, entry_problem(path, error)


def list_folder(folder: Path, pattern: str = "*") -> tuple[list[Path], str | None]:
    """Entries of ``folder`` matching ``pattern`` by name (sorted), or why it cannot be listed."""
    import fnmatch

    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if fnmatch.fnmatchcase(e.name, pattern))
    except OSError as error:
        return [], entry_problem(folder, error).replace("a file", "a folder")
    return [folder / name for name in names], None
