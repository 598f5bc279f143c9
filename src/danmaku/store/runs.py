"""Bookkeeping shared by importers (and the crawler): runs, file markers, rejects.

An import commits each batch of files in one transaction together with the
``imported_file`` markers of those files, so a re-run -- or a run after
``kill -9`` -- skips exactly what is stored and redoes exactly what is not.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

from sqlalchemy import Connection, Engine, insert, select, update

from danmaku.importers.parsers import BadLine
from danmaku.store.models import ImportedFile, Reject, Run

RAW_LIMIT = 500


def now_ms() -> int:
    return int(time.time() * 1000)


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
        data = asdict(self)
        data["problems"] = data["problems"][:100]
        return json.dumps(data, ensure_ascii=False)


class StrictModeError(RuntimeError):
    """Raised under ``--strict`` on the first line that does not parse."""


def start_run(engine: Engine, kind: str, target: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(Run).values(
                kind=kind, target=target, started_at_ms=now_ms(), files=0, sources=0,
                rows=0, rejected=0, skipped=0, status="running",
            ).returning(Run.id)
        ).scalar_one()


def finish_run(engine: Engine, run_id: int, summary: ImportSummary, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Run).where(Run.id == run_id).values(
                finished_at_ms=now_ms(), files=summary.files_imported,
                sources=summary.sources_created, rows=summary.rows,
                rejected=summary.rejected, skipped=summary.files_skipped,
                status=status, stats_json=summary.as_json(),
            )
        )


def imported_files(engine: Engine, kind: str) -> dict[str, str]:
    """name -> sha1 of every file of this kind whose rows are committed."""
    with engine.connect() as conn:
        return dict(conn.execute(select(ImportedFile.name, ImportedFile.sha1).where(
            ImportedFile.kind == kind)).all())


def record_file(conn: Connection, *, kind: str, name: str, size: int, sha1: str,
                rows: int, rejected: int, run_id: int) -> None:
    record_files(conn, [{"kind": kind, "name": name, "size": size, "sha1": sha1, "rows": rows,
                         "rejected": rejected, "run_id": run_id}])


def record_files(conn: Connection, markers: list[dict]) -> None:
    """Mark files as committed (in the transaction that holds their rows)."""
    if markers:
        conn.execute(insert(ImportedFile), markers)


def record_rejects(conn: Connection, run_id: int, file: str, bad: list[BadLine]) -> None:
    if bad:
        conn.execute(insert(Reject), [
            {"run_id": run_id, "file": file, "line": b.line, "reason": b.reason,
             "raw": b.raw[:RAW_LIMIT].decode("utf-8", "replace")}
            for b in bad
        ])


def finish_run_with(engine: Engine, run_id: int, status: str, *, sources: int, rows: int,
                    rejected: int, stats: dict) -> None:
    """Close a run that is not an import (the live recorder): its counts and its stats as JSON."""
    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(
            finished_at_ms=now_ms(), sources=sources, rows=rows, rejected=rejected,
            status=status, stats_json=json.dumps(stats, ensure_ascii=False)))
