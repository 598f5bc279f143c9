"""``danmaku import live``: the crowd-recorded live-chat tree -> one source per broadcast.

Layout ``{room_id}/{Y-M-D}.txt``. A broadcast is cut by silence: a danmaku more
than ``gap`` after the previous one starts a new broadcast, across the midnight
files of one room. Files are read in day order, one transaction per file with its
marker; a file's danmaku that continue a broadcast already stored (from the day
before, or an earlier import) extend that source rather than start a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from danmaku.importers.parsers import BadLine, LiveDanmaku, live_file_date, parse_live_chat
from danmaku.importers.run import (
    ImportSummary,
    StrictModeError,
    file_problem,
    import_run,
    list_folder,
    read_file,
    sha1_of,
)
from danmaku.store.models import LIVE_BROADCAST
from danmaku.store.writes import (
    continued_broadcast,
    imported_files,
    insert_danmaku,
    max_danmaku_chars,
    record_files,
    record_rejects,
    source_key_live,
    upsert_source,
    widen_broadcast,
)

KIND = "live_chat"
DEFAULT_GAP_MINUTES = 30.0
COLUMNS = ("source_id", "sent_at_ms", "sender", "text")


def find_live_files(root: Path) -> tuple[list[tuple[str, int, Path]], list[tuple[str, str]]]:
    """((name, room_id, path) of every ``{room}/{Y-M-D}.txt`` below root, rooms and days in
    order; (folder, reason) of every room folder that cannot be listed).

    ``root`` may be the tree or a single room's folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    top, problem = list_folder(root)
    if problem:
        raise PermissionError(f"{root} cannot be listed: {problem}")
    if root.name.isdigit() and any(live_file_date(p.name) for p in top):
        rooms = [root]
    else:
        rooms = sorted((p for p in top if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))
    files: list[tuple[str, int, Path]] = []
    problems: list[tuple[str, str]] = []
    for room in rooms:
        entries, problem = list_folder(room)
        if problem:
            problems.append((f"{room.name}/", problem))
        days = sorted((live_file_date(p.name), p) for p in entries if live_file_date(p.name))
        files.extend((f"{room.name}/{path.name}", int(room.name), path) for _, path in days)
    return files, problems


def import_live_chat(
    engine: Engine,
    root: Path,
    *,
    gap_minutes: float = DEFAULT_GAP_MINUTES,
    strict: bool = False,
    max_chars: int | None = None,
    on_file: Callable[[str, int], None] | None = None,
    on_bad: Callable[[str, BadLine], None] | None = None,
) -> ImportSummary:
    """Import every live-chat file below ``root``; safe to re-run, to kill and to run twice at once.

    Unreadable entries and folders are rejects of line 0, counted in
    ``files_failed``; the import goes on (``strict``: it stops).
    """
    gap_ms = int(gap_minutes * 60_000)
    limit = max_chars or max_danmaku_chars()
    files, folder_problems = find_live_files(root)
    with import_run(engine, KIND, str(root)) as (summary, run_id):
        problems = [(folder, reason, f"{folder}: {reason}; its files were not imported")
                    for folder, reason in folder_problems]
        done = imported_files(engine, KIND)
        for name, room_id, path in files:
            summary.files_seen += 1
            data, reason = read_file(path)
            if data is None:
                problems.append((name, reason, f"{name}: {reason}; not imported"))
                continue
            sha1 = sha1_of(data)
            if name in done:
                if done[name] == sha1:
                    summary.files_skipped += 1
                else:
                    summary.files_changed += 1
                    summary.problem(f"{name}: changed since it was imported; not re-imported")
                if on_file:
                    on_file(name, 0)
                continue
            danmaku: list[LiveDanmaku] = []
            bad: list[BadLine] = []
            for item in parse_live_chat(data, max_chars=limit):
                if isinstance(item, LiveDanmaku):
                    danmaku.append(item)
                elif strict:
                    raise StrictModeError(f"{name}:{item.line}: {item.reason}")
                else:
                    bad.append(item)
                    if on_bad:
                        on_bad(name, item)
            try:
                with engine.begin() as conn:
                    created = _store_file(conn, room_id, name, danmaku, gap_ms)
                    record_rejects(conn, run_id, name, bad)
                    record_files(conn, [{"kind": KIND, "name": name, "size": len(data), "sha1": sha1,
                                         "rows": len(danmaku), "rejected": len(bad), "run_id": run_id}])
            except IntegrityError:
                # Another import of the same tree committed this file first (its
                # marker's unique key refused ours); everything here rolled back.
                summary.files_skipped += 1
                if on_file:
                    on_file(name, 0)
                continue
            summary.files_imported += 1
            summary.sources_created += created
            summary.rows += len(danmaku)
            summary.rejected += len(bad)
            if on_file:
                on_file(name, len(danmaku))
        if problems:
            if strict:
                raise StrictModeError(problems[0][2])
            with engine.begin() as conn:
                for name, reason, text in problems:
                    record_rejects(conn, run_id, name, [file_problem(reason, name)])
                    summary.files_failed += 1
                    summary.rejected += 1
                    summary.problem(text)
    return summary


def split_broadcasts(times_ms: list[int], gap_ms: int) -> list[tuple[int, int]]:
    """Index ranges [start, end) of ``times_ms`` (sorted) separated by silences > gap."""
    ranges: list[tuple[int, int]] = []
    begin = 0
    for i in range(1, len(times_ms)):
        if times_ms[i] - times_ms[i - 1] > gap_ms:
            ranges.append((begin, i))
            begin = i
    if times_ms:
        ranges.append((begin, len(times_ms)))
    return ranges


def _store_file(conn: Connection, room_id: int, name: str, danmaku: list[LiveDanmaku],
                gap_ms: int) -> int:
    """Assign one file's danmaku to broadcasts (stored or new); returns sources created."""
    ordered = sorted(danmaku, key=lambda d: (d.sent_at_ms, d.line))
    created = 0
    for begin, end in split_broadcasts([d.sent_at_ms for d in ordered], gap_ms):
        part = ordered[begin:end]
        first, last = part[0].sent_at_ms, part[-1].sent_at_ms
        broadcast = continued_broadcast(conn, room_id, first, last, gap_ms)
        if broadcast is None:
            source_id, is_new = upsert_source(
                conn, source_key_live(room_id, first), LIVE_BROADCAST, f"live:{name}",
                {"room_id": room_id, "started_at_ms": first, "ended_at_ms": last},
            )
            created += int(is_new)
        else:
            source_id = broadcast[0]
            widen_broadcast(conn, source_id, first, last)
        insert_danmaku(conn, COLUMNS, [(source_id, d.sent_at_ms, d.sender, d.text) for d in part])
    return created
