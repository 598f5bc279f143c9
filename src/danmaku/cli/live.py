"""``danmaku live ...``: record live-stream chat into the store, and look at what is recorded.

``record`` runs ``danmaku.live.recorder`` until Ctrl-C or SIGTERM (both flush
and exit cleanly; a second one gives up on what is not yet committed). On a
terminal it draws a status line per room (connected, broadcasting, danmaku per
minute, last error); otherwise it logs one line per change and a summary line
per room every ``--log-every`` seconds, for journald or a log file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from danmaku.cli.console import console, format_ms
from danmaku.store.db import make_engine, redact, resolve_url

live_app = typer.Typer(
    help="Record Bilibili live-stream chat into the store, always on (anonymous and polite by "
         "default). Respect Bilibili's terms (README).",
    no_args_is_help=True,
)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Store URL or SQLite file path (env DANMAKU_DATABASE_URL; "
                              "default ./danmaku.sqlite)."),
]
MAX_ROWS_SHOWN = 40


def _rooms(rooms: list[str] | None, rooms_file: Path | None) -> list[int]:
    from danmaku.live.rooms import RoomsError, parse_room, read_rooms_file

    try:
        found = [parse_room(r) for r in rooms or []]
        if rooms_file is not None:
            if not rooms_file.is_file():
                raise typer.BadParameter(f"{rooms_file} is not a file", param_hint="--rooms-file")
            found += read_rooms_file(rooms_file)
    except RoomsError as error:
        raise typer.BadParameter(str(error)) from None
    if not found:
        raise typer.BadParameter("give ROOM ids, or --rooms-file FILE")
    return list(dict.fromkeys(found))


def _room_row(status) -> tuple[str, ...]:
    link = ("[green]connected" if status.connected
            else "[red]stopped" if status.stopped else "[yellow]reconnecting")
    room = str(status.room) if status.room_id in (None, status.room) else f"{status.room} ({status.room_id})"
    return (room, link, "[bold green]LIVE" if status.broadcasting else "-", f"{status.per_minute:,}",
            f"{status.stored:,}", f"{status.popularity:,}" if status.popularity is not None else "-",
            (status.last_error or "")[:70])


def _table(recorder, started: float) -> Table:
    statuses = recorder.statuses()
    live = sum(s.broadcasting for s in statuses)
    connected = sum(s.connected for s in statuses)
    per_minute = sum(s.per_minute for s in statuses)
    stored = sum(s.stored for s in statuses)
    table = Table(title=f"danmaku live record: {len(statuses)} rooms, {connected} connected, {live} live, "
                        f"{per_minute:,} danmaku/min, {stored:,} stored ({time.monotonic() - started:.0f} s)",
                  title_justify="left")
    for column in ("room", "link", "broadcast", "danmaku/min", "stored", "popularity", "last error"):
        numeric = column in ("danmaku/min", "stored", "popularity")
        table.add_column(column, justify="right" if numeric else "left")
    shown = sorted(statuses, key=lambda s: (not s.broadcasting, s.connected, -s.per_minute, s.room))
    limit = max(5, min(MAX_ROWS_SHOWN, console.size.height - 8))
    for status in shown[:limit]:
        table.add_row(*_room_row(status))
    if len(shown) > limit:
        table.add_row(f"... {len(shown) - limit} more", "", "", "", "", "", "")
    return table


def _log_line(status) -> str:
    state = "connected" if status.connected else ("stopped" if status.stopped else "reconnecting")
    line = (f"room {status.room}: {state}, {'live' if status.broadcasting else 'off air'}, "
            f"{status.per_minute} danmaku/min, {status.received} received, {status.stored} stored")
    return line + (f", last error: {status.last_error}" if status.last_error else "")


def _summary_table(summary) -> Table:
    table = Table(title="danmaku live record")
    for column in ("rooms", "received", "stored", "duplicates skipped", "sources opened", "bad frames",
                   "unreadable", "too long", "store retries", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(str(summary.rooms), f"{summary.received:,}", f"{summary.stored:,}",
                  f"{summary.duplicates:,}", str(summary.sources_opened), str(summary.protocol_errors),
                  str(summary.unreadable), str(summary.too_long), str(summary.store_retries),
                  f"{summary.seconds:.0f}")
    return table


async def _record(recorder, log_every: float) -> object:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            console.print("[yellow]stopping: committing what is received (again to give up on it)[/]")
            stop.set()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    started = time.monotonic()
    task = asyncio.create_task(recorder.record(stop))
    if console.is_terminal:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not task.done():
                live.update(_table(recorder, started) if recorder.writer is not None else "starting ...")
                await asyncio.wait({task}, timeout=0.5)
    else:
        last = time.monotonic()
        while not task.done():
            await asyncio.wait({task}, timeout=min(1.0, log_every))
            if recorder.writer is not None and time.monotonic() - last >= log_every:
                last = time.monotonic()
                for status in recorder.statuses():
                    console.print(_log_line(status), markup=False, highlight=False)
    return await task


@live_app.command("record")
def record(
    rooms: Annotated[list[str] | None, typer.Argument(
        help="Room ids (short or long) or https://live.bilibili.com/ID addresses.")] = None,
    rooms_file: Annotated[Path | None, typer.Option(
        "--rooms-file", help="A file of rooms, one per line (# comments).")] = None,
    export_txt: Annotated[Path | None, typer.Option(
        "--export-txt", help="Also write the community's text tree {room}/{Y-M-D}.txt here "
                             "(`danmaku import live` reads it back).")] = None,
    export_xml: Annotated[Path | None, typer.Option(
        "--export-xml", help="Also write BililiveRecorder-style XML, one file per broadcast, here.")] = None,
    db: DbOption = None,
    gap_minutes: Annotated[float, typer.Option(
        "--gap-minutes",
        help="A silence longer than this ends a broadcast (as `danmaku import live`).")] = 30.0,
    flush_seconds: Annotated[float, typer.Option(
        "--flush-seconds", help="Commit at least this often (what a kill -9 can lose).")] = 0.5,
    api_interval: Annotated[float, typer.Option(
        "--api-interval", help="Seconds between two API requests of the whole recorder (politeness).")] = 1.0,
    log_every: Annotated[float, typer.Option(
        "--log-every", help="Without a terminal: seconds between per-room log lines.")] = 60.0,
) -> None:
    """Record rooms' chat into the store until Ctrl-C or SIGTERM (both flush and exit cleanly).

    One source per broadcast: opened on LIVE, closed on PREPARING or after a long
    silence; chat between broadcasts is kept too. Anonymous unless
    DANMAKU_BILIBILI_SESSDATA is set (never stored or logged).

    Example: danmaku live record 21452505 22637261 --export-txt live_chat/ --export-xml live_xml/
    """
    from danmaku.live.recorder import Recorder, RecordOptions

    room_ids = _rooms(rooms, rooms_file)
    for value, name in ((gap_minutes, "--gap-minutes"), (flush_seconds, "--flush-seconds"),
                        (log_every, "--log-every")):
        if value <= 0:
            raise typer.BadParameter("must be positive", param_hint=name)
    if api_interval < 0:
        raise typer.BadParameter("must not be negative", param_hint="--api-interval")
    options = RecordOptions(gap_minutes=gap_minutes, export_txt=export_txt, export_xml=export_xml,
                            flush_interval_s=flush_seconds, api_interval_s=api_interval)
    try:
        engine = make_engine(db)
    except Exception as error:  # a bad URL or an unreachable server: one line, no traceback
        console.print(f"[red]error:[/] cannot open the store {redact(resolve_url(db))}: {error}")
        raise typer.Exit(1) from None

    def on_status(status) -> None:
        if not console.is_terminal:
            console.print(_log_line(status), markup=False, highlight=False)

    def on_problem(message: str) -> None:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)

    recorder = Recorder(engine, room_ids, options, on_status=on_status, on_problem=on_problem)
    console.print(f"recording {len(room_ids)} room(s) into {redact(resolve_url(db))}"
                  + (f", text tree in {export_txt}" if export_txt else "")
                  + (f", XML in {export_xml}" if export_xml else ""), highlight=False)
    try:
        summary = asyncio.run(_record(recorder, log_every))
    except asyncio.CancelledError:
        console.print("[red]stopped without committing the last batch[/]")
        raise typer.Exit(130) from None
    console.print(_summary_table(summary))
    for problem in summary.problems[:10]:
        console.print(f"[yellow]problem:[/] {problem}", highlight=False)


@live_app.command("status")
def status(
    db: DbOption = None,
    top: Annotated[int, typer.Option(
        "--top", min=1, help="How many rooms to list (most danmaku first).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Rooms, broadcasts (recorded and imported), danmaku and super chats in the store.

    Example: danmaku live status --top 20
    """
    from danmaku.live.status import live_status

    report = live_status(make_engine(db), top=top)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    out = console.__class__()
    if not report["rooms"]:
        out.print(f"no live broadcasts in {redact(resolve_url(db))} yet: danmaku live record ROOM")
        return
    table = Table(title=f"live rooms in {redact(resolve_url(db))} ({len(report['rooms'])} of "
                        f"{report['total_rooms']}; {report['broadcasts']:,} broadcasts, "
                        f"{report['danmaku']:,} danmaku)")
    for column in ("room", "broadcasts", "recorded", "on air since (UTC)", "danmaku", "super chats",
                   "first danmaku (UTC)", "last danmaku (UTC)"):
        table.add_column(column, justify="right")
    for room in report["rooms"]:
        table.add_row(str(room["room_id"]), f"{room['broadcasts']:,}", f"{room['recorded']:,}",
                      format_ms(room["on_air_since_ms"], seconds=False), f"{room['danmaku']:,}",
                      f"{room['super_chats']:,}", format_ms(room["first_ms"], seconds=False),
                      format_ms(room["last_ms"], seconds=False))
    out.print(table)
    for run in report["runs"][:3]:
        out.print(f"record run {run['id']} ({run['status']}): rooms {run['rooms'][:60]}, started "
                  f"{format_ms(run['started_at_ms'])}, {run['rows']:,} danmaku stored", highlight=False)
