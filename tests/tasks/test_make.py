"""``danmaku tasks make``: splits by source, counts against the store's own SQL, the vocab filter, the CLI.

The store holds four real uploaders of the shared sample (imported with the
real importer) plus hand-made sources with the dirt a store has (blank and
multi-line texts, an emoji line, an uploader with too few videos, live
broadcasts). Every check reads the store again with its own SQL, or compares
with ``danmaku corpus export`` of the same sources.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from danmaku.cli.main import app
from danmaku.store.db import make_engine
from danmaku.store.models import LIVE_BROADCAST, VIDEO_PAGE, Danmaku, Source
from danmaku.store.writes import insert_danmaku, source_key_live, source_key_video, upsert_source
from danmaku.tasks.make import TaskError, TaskOptions, make_task
from danmaku.tasks.plan import ClassChoice, PlanError, SourceCount, assign_splits, choose_classes
from danmaku.text.vocab_filter import VocabFilter
from tests.support.task_data import UPLOADERS, VOCAB, real_store

SPLITS = ("train", "dev", "test")
BREAKS = re.compile("[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
MADE_UP = {  # uploader 7: 4 videos, 8: 3 videos, 9: 2 videos (too few)
    7: [["草", "  ", "阿夸\n可爱", "🤣", "awsl"], ["草", "草", "kksk"], ["", "晚安"], ["8888", "好"]],
    8: [["夏色祭", "祭"], ["yyds"], ["马自立", "  马 "]],
    9: [["只有"], ["两个"]],
}


def add_video(conn, aid: int, mid: int, texts: list[str]) -> None:
    sid, _ = upsert_source(conn, source_key_video(aid, 1), VIDEO_PAGE, "test",
                           {"aid": aid, "page": 1, "uploader_mid": mid})
    insert_danmaku(conn, ("source_id", "sent_at_ms", "text"),
                   [(sid, 1_546_300_800_000 + i, t) for i, t in enumerate(texts)])


def add_broadcast(conn, room: int, start: int, texts: list[str]) -> None:
    sid, _ = upsert_source(conn, source_key_live(room, start), LIVE_BROADCAST, "test", {"room_id": room})
    insert_danmaku(conn, ("source_id", "sent_at_ms", "text", "sender"),
                   [(sid, start + i, t, "1") for i, t in enumerate(texts)])


@pytest.fixture
def store(db_url: str, tmp_path: Path):
    engine = real_store(tmp_path, db_url)
    with engine.begin() as conn:
        aid = 900_000
        for mid, videos in MADE_UP.items():
            for texts in videos:
                aid += 1
                add_video(conn, aid, mid, texts)
        for room, broadcasts in {100: 3, 200: 4}.items():
            for b in range(broadcasts):
                texts = [f"房间{room}", "晚上好", "草"][:b + 1]
                add_broadcast(conn, room, 1_600_000_000_000 + b * 10**8, texts)
    yield engine
    engine.dispose()


def one_line(text: str) -> str:
    return BREAKS.sub(" ", text.strip())


def read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["text", "label"]
        return [tuple(r) for r in reader]


def read_sources(task: Path) -> list[dict[str, str]]:
    with open(task / "sources.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def store_rows(engine, keys: list[str], owner) -> Counter:
    """(one-lined text, label) of the non-blank danmaku of these sources, read with our own SQL."""
    with engine.connect() as conn:
        rows = conn.execute(select(Danmaku.text, owner).join(Source, Source.id == Danmaku.source_id)
                            .where(Source.key.in_(keys))).all()
    return Counter((one_line(t), str(o)) for t, o in rows if one_line(t))


def test_uploader_task_splits_by_source_and_counts_match_the_store(store, tmp_path: Path):
    result = make_task(store, "uploader", tmp_path / "task", options=TaskOptions(
        choice=ClassChoice(classes=None, min_per_class=3), max_per_class=None))
    m = result.manifest
    assert sorted(m["selection"]["chosen"]) == sorted([*UPLOADERS, "7", "8"])  # 9 has 2 videos only

    sources = read_sources(tmp_path / "task")
    keys = [s["key"] for s in sources]
    assert len(keys) == len(set(keys)), "a source is listed twice"
    with store.connect() as conn:
        with_danmaku = select(Danmaku.source_id).distinct()
        stored = {key: str(mid) for key, mid in conn.execute(
            select(Source.key, Source.uploader_mid).where(Source.kind == VIDEO_PAGE,
                                                          Source.id.in_(with_danmaku)))}
    for label in m["selection"]["chosen"]:
        mine = [s for s in sources if s["label"] == label]
        assert {s["key"] for s in mine} == {k for k, mid in stored.items() if mid == label}
        assert {s["split"] for s in mine} == set(SPLITS), f"class {label} is missing from a split"

    for split in SPLITS:
        split_keys = [s["key"] for s in sources if s["split"] == split]
        expected = store_rows(store, split_keys, Source.uploader_mid)
        got = Counter(read_rows(tmp_path / "task" / f"{split}.csv"))
        assert got == expected, split
        by_label = Counter(label for (_, label), n in expected.items() for _ in range(n))
        assert m["counts"][split] == {label: by_label[label] for label in m["selection"]["chosen"]}
    assert ("阿夸 可爱", "7") in Counter(read_rows(tmp_path / "task" / "train.csv")) | Counter(
        read_rows(tmp_path / "task" / "dev.csv")) | Counter(read_rows(tmp_path / "task" / "test.csv"))
    with store.connect() as conn:
        chosen = select(Source.id).where(Source.uploader_mid.in_([int(c) for c in m["selection"]["chosen"]]))
        blank = sum(not one_line(t) for t in conn.execute(
            select(Danmaku.text).where(Danmaku.source_id.in_(chosen))).scalars())
    assert blank >= 2 and m["dropped"] == {"empty": blank}  # "  " and "" of uploader 7 at least
    assert "password" not in json.dumps(m) and m["store"].startswith(("sqlite", "postgresql"))


def test_vocab_filter_drops_what_the_corpus_drops(store, tmp_path: Path):
    from danmaku.corpus.export import ExportOptions, Selection, export_corpus

    mids = tuple(int(m) for m in UPLOADERS) + (7, 8)
    result = make_task(store, "uploader", tmp_path / "task", vocab=VOCAB, options=TaskOptions(
        choice=ClassChoice(only=mids, min_per_class=3), max_per_class=None))
    texts = Counter(t for split in SPLITS for t, _ in read_rows(tmp_path / "task" / f"{split}.csv"))
    corpus = export_corpus(store, VOCAB, root=tmp_path / "corpora", name="same sources",
                           selection=Selection(kind=VIDEO_PAGE, uploaders=mids), options=ExportOptions())
    lines = Counter(line for line in (corpus.path / "danmaku_text_pure.txt").read_text("utf-8").split("\n")
                    if line)
    assert texts == lines
    assert "🤣" not in texts and texts["草"] >= 3
    assert result.manifest["dropped"]["unk"] == corpus.manifest["counts"]["dropped_by_reason"]["unk"]
    assert result.manifest["vocab"]["sha256"] == corpus.manifest["vocab"]["sha256"]
    keep = VocabFilter(VOCAB)
    assert set(keep.decide_batch(list(texts))) == {0}


def test_capped_sample_is_bounded_deterministic_and_seeded(store, tmp_path: Path):
    def make(out: str, **kw):
        options = TaskOptions(choice=ClassChoice(only=tuple(int(m) for m in UPLOADERS)), **kw)
        return make_task(store, "uploader", tmp_path / out, options=options)

    full = make("full", max_per_class=None)
    capped = make("capped", max_per_class=100)
    caps = {"train": 80, "dev": 10, "test": 10}
    for split in SPLITS:
        for label in capped.manifest["selection"]["chosen"]:
            available = full.manifest["counts"][split][label]
            assert capped.manifest["counts"][split][label] == min(caps[split], available)
        sample = Counter(read_rows(tmp_path / "capped" / f"{split}.csv"))
        assert not sample - Counter(read_rows(tmp_path / "full" / f"{split}.csv")), "a row not in the store"
    again = make("again", max_per_class=100)
    assert again.manifest["files"] == capped.manifest["files"]
    assert (tmp_path / "again" / "train.csv").read_bytes() == (tmp_path / "capped" / "train.csv").read_bytes()
    other = make("other", max_per_class=100, seed=7)
    assert other.manifest["files"]["train.csv"] != capped.manifest["files"]["train.csv"]

    with pytest.raises(TaskError, match="made with other seed"):
        make("capped", max_per_class=100, seed=7)
    replaced = make_task(store, "uploader", tmp_path / "capped", force=True, options=TaskOptions(
        choice=ClassChoice(only=tuple(int(m) for m in UPLOADERS)), max_per_class=100, seed=7))
    assert replaced.manifest["files"] == other.manifest["files"]


def test_room_task_labels_broadcasts_by_room(store, tmp_path: Path):
    result = make_task(store, "room", tmp_path / "rooms", options=TaskOptions(
        choice=ClassChoice(min_per_class=1), max_per_class=None))
    assert result.manifest["selection"]["chosen"] == ["100", "200"]
    sources = read_sources(tmp_path / "rooms")
    assert all(s["key"].startswith(f"live:{s['label']}:") for s in sources)
    for split in SPLITS:
        keys = [s["key"] for s in sources if s["split"] == split]
        expected = store_rows(store, keys, Source.room_id)
        assert Counter(read_rows(tmp_path / "rooms" / f"{split}.csv")) == expected


def test_plan_assigns_every_source_once_and_is_seeded():
    sizes = [500, 40, 40, 30, 20, 10, 300, 5]
    group = [SourceCount(i, f"video:{i}:1", 1, rows) for i, rows in enumerate(sizes)]
    fractions = {"train": 0.8, "dev": 0.1, "test": 0.1}
    plan = assign_splits(group, fractions, seed=1)
    assert sorted(plan) == [s.id for s in group] and set(plan.values()) == set(SPLITS)
    assert plan == assign_splits(list(reversed(group)), fractions, seed=1)  # order of rows is irrelevant
    assert any(assign_splits(group, fractions, seed=s) != plan for s in range(2, 6))
    rows = Counter()
    for s in group:
        rows[plan[s.id]] += s.rows
    assert rows["train"] > rows["dev"] and rows["train"] > rows["test"]

    counts = [SourceCount(10 * o + i, f"v{o}{i}", o, o) for o in (1, 2, 3) for i in range(3)]
    assert choose_classes(counts, ClassChoice(classes=2, min_per_class=0)) == [2, 3]
    with pytest.raises(PlanError, match="9: no danmaku"):
        choose_classes(counts, ClassChoice(only=(1, 9)))
    with pytest.raises(PlanError, match="eligible"):
        choose_classes(counts, ClassChoice(min_per_class=8))


def test_cli_prints_the_table_and_fails_in_one_line(store, tmp_path: Path):
    url = store.url.render_as_string(hide_password=False)
    runner = CliRunner()
    result = runner.invoke(app, ["tasks", "make", "uploader", "--db", url, "--out", str(tmp_path / "t"),
                                 "--classes", "3", "--max-per-class", "50", "--vocab", str(VOCAB)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert len(manifest["selection"]["chosen"]) == 3
    assert f"{manifest['rows']['train']:,}" in result.output and "unk" in result.output

    empty = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    result = runner.invoke(app, ["tasks", "make", "room", "--db", str(tmp_path / "empty.sqlite"),
                                 "--out", str(tmp_path / "e")], env={"COLUMNS": "200"})
    empty.dispose()
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output
