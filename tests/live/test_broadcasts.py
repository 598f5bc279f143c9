"""Which source each message goes to: LIVE / PREPARING, silences, reconnections, restarts."""

from __future__ import annotations

from danmaku.importers.live_chat import split_broadcasts
from danmaku.live.broadcasts import Add, BroadcastTracker, Close, Mark, Open, OpenSource
from danmaku.live.messages import Chat

GAP = 30 * 60_000
T0 = 1_700_000_000_000


def chat(ms: int, text: str = "x") -> Chat:
    return Chat(identity=ms, sent_at_ms=ms, uid=1, uname="u", text=text)


def tracker(resumed: OpenSource | None = None) -> tuple[BroadcastTracker, list]:
    ops: list = []
    return BroadcastTracker(7, GAP, ops.append, resumed), ops


def test_live_opens_preparing_closes_a_second_live_is_ignored() -> None:
    t, ops = tracker()
    t.live(T0, T0 + 5, now=0)
    t.live(None, T0 + 10, now=1)  # the server says LIVE twice
    t.chat(chat(T0 + 1000), now=2)
    t.ended(T0 + 60_000)
    assert ops == [Open(7, T0, "on_air"), Add(7, T0, chat(T0 + 1000)), Close(7, T0, T0 + 60_000)]
    assert not t.broadcasting and t.open is None


def test_chat_between_broadcasts_is_kept_in_its_own_source() -> None:
    t, ops = tracker()
    t.chat(chat(T0), now=0)
    t.chat(chat(T0 + 60_000), now=1)
    t.live(T0 + 120_000, T0 + 120_000, now=2)
    t.chat(chat(T0 + 130_000), now=3)
    assert ops == [Open(7, T0, "chat"), Add(7, T0, chat(T0)), Add(7, T0, chat(T0 + 60_000)),
                   Close(7, T0, T0 + 60_000), Open(7, T0 + 120_000, "on_air"),
                   Add(7, T0 + 120_000, chat(T0 + 130_000))]


def test_silence_cuts_exactly_where_the_importer_cuts() -> None:
    times = [T0, T0 + GAP, T0 + 2 * GAP + 1, T0 + 2 * GAP + 5, T0 + 5 * GAP]
    t, ops = tracker()
    for i, ms in enumerate(times):
        t.chat(chat(ms), now=i)
    starts = [op.started_ms for op in ops if isinstance(op, Open)]
    assert starts == [times[begin] for begin, _ in split_broadcasts(times, GAP)]


def test_local_silence_closes_the_open_source() -> None:
    t, ops = tracker()
    t.live(T0, T0, now=100.0)
    t.tick(now=100.0 + GAP / 1000 - 1)
    assert t.open is not None
    t.tick(now=100.0 + GAP / 1000 + 1)
    assert ops[-1] == Close(7, T0, T0) and t.open is None
    t.chat(chat(T0 + 10), now=2000.0)  # still live: the next danmaku opens a new broadcast on air
    assert ops[-2] == Open(7, T0 + 10, "on_air")


def test_reconnection_reconciles_what_was_missed() -> None:
    t, ops = tracker()
    t.status(True, T0, T0 + 3_600_000, now=0)  # joined an hour into a broadcast
    t.chat(chat(T0 + 3_600_500), now=1)  # not cut: the broadcast was alive when we joined
    assert ops == [Open(7, T0, "on_air"), Add(7, T0, chat(T0 + 3_600_500))]
    t.status(True, T0, T0 + 3_700_000, now=2)  # reconnected, still live: nothing changes
    assert len(ops) == 2
    t.status(False, None, T0 + 9_000_000, now=3)  # PREPARING was missed while disconnected
    assert ops[-1] == Close(7, T0, T0 + 3_700_000) and not t.broadcasting


def test_chat_source_becomes_the_broadcast_when_live_was_missed() -> None:
    t, ops = tracker()
    t.chat(chat(T0 + 500), now=0)
    t.status(True, T0, T0 + 1000, now=1)  # live since before the chat we kept
    assert ops[-1] == Mark(7, T0 + 500, "on_air") and t.open.status == "on_air"


def test_a_restart_resumes_the_open_broadcast() -> None:
    t, ops = tracker(OpenSource(T0, T0 + 50_000, 0.0, "on_air"))
    assert t.broadcasting
    t.live(T0, T0 + 60_000, now=1)  # the same broadcast's LIVE again
    t.chat(chat(T0 + 61_000), now=2)
    assert ops == [Add(7, T0, chat(T0 + 61_000))]
