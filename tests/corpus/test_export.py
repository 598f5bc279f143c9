"""``danmaku.corpus.export``: format, order, determinism across databases and workers, splits, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from danmaku.artifacts import CORPUS_EVAL_FILE as EVAL_FILE
from danmaku.artifacts import CORPUS_TRAIN_FILE as TRAIN_FILE
from danmaku.corpus import manifest as mf
from danmaku.corpus.export import ExportError, ExportOptions, Selection, export_corpus
from danmaku.corpus.lines import one_line, one_line_batch
from danmaku.corpus.options import eval_hash
from danmaku.importers.live_chat import import_live_chat
from danmaku.importers.video_csv import import_video_csv
from danmaku.store.db import make_engine
from danmaku.store.models import LIVE_BROADCAST, VIDEO_PAGE, Danmaku, Source
from danmaku.store.writes import insert_danmaku, source_key_video, upsert_source
from danmaku.text.vocab_filter import VocabFilter
from tests.conftest import FIXTURES, SHARED_DATA
from tests.support.google_reference import full_tokenizer

VOCAB = SHARED_DATA / "vocab.txt"
FIX = FIXTURES / "export"


def filled(url: str) -> Engine:
    engine = make_engine(url)
    import_video_csv(engine, FIX / "video", workers=1)
    import_live_chat(engine, FIX / "live")
    return engine


def add_video(engine: Engine, aid: int, texts: list[str], mid: int = 7,
              times: list[int] | None = None) -> int:
    with engine.begin() as conn:
        sid, _ = upsert_source(conn, source_key_video(aid, 1), VIDEO_PAGE, "test",
                               {"aid": aid, "page": 1, "uploader_mid": mid})
        times = times or [1_546_300_800_000 + i * 1000 for i in range(len(texts))]
        insert_danmaku(conn, ("source_id", "sent_at_ms", "text"),
                       [(sid, t, text) for t, text in zip(times, texts, strict=True)])
    return sid


def documents(path: Path) -> list[list[str]]:
    """The documents of a corpus file, checking the format on the way."""
    text = path.read_text(encoding="utf-8")
    if not text:
        return []
    assert text.endswith("\n") and not text.endswith("\n\n"), "ends with one newline"
    assert not text.startswith("\n") and "\n\n\n" not in text, "no empty document"
    docs = [doc.split("\n") for doc in text[:-1].split("\n\n")]
    for doc in docs:
        for line in doc:
            assert line and line == line.strip() and "\t" not in line and "\r" not in line
    return docs


@pytest.fixture(scope="module")
def google():
    return full_tokenizer(VOCAB)


def expected_documents(engine: Engine, google, eval_: set[int] = frozenset()) -> tuple[list, list]:
    """The corpus written out by an independent, slow reference: ORM reads + Google's tokenizer."""
    train: list[list[str]] = []
    evals: list[list[str]] = []
    with engine.connect() as conn:
        for source_id, in conn.execute(select(Source.id).order_by(Source.id)):
            doc = []
            for text, in conn.execute(select(Danmaku.text).where(Danmaku.source_id == source_id)
                                      .order_by(Danmaku.sent_at_ms, Danmaku.id)):
                line = " ".join(text.replace("\r\n", "\n").splitlines()).replace("\t", " ").strip()
                tokens = google.tokenize(line)
                if tokens and "[UNK]" not in tokens:
                    doc.append(line)
            if doc:
                (evals if source_id in eval_ else train).append(doc)
    return train, evals


def test_file_is_the_study_format_and_order(db_url, tmp_path, google):
    engine = filled(db_url)
    result = export_corpus(engine, VOCAB, out=tmp_path / "c")
    train, _ = expected_documents(engine, google)
    assert documents(tmp_path / "c" / TRAIN_FILE) == train
    assert len(train) >= 8
    counts = result.manifest["counts"]
    assert counts["danmaku_kept"] == sum(map(len, train))
    assert counts["danmaku_read"] == counts["danmaku_kept"] + counts["danmaku_dropped"]
    assert counts["dropped_by_reason"]["unk"] >= 3  # the fixture's emoji
    assert counts["documents_by_kind"][LIVE_BROADCAST] >= 4
    assert counts["characters"] == sum(len(line) for doc in train for line in doc)


def test_multiline_texts_stay_one_line(sqlite_url, tmp_path):
    engine = filled(sqlite_url)
    sid = add_video(engine, 900, ["a\nb", "x\r\ny", "p\u2028q", "\tz\t", "草\x0b草", "  ", "\n"])
    export_corpus(engine, VOCAB, out=tmp_path / "c", selection=Selection(uploaders=(7,)))
    assert documents(tmp_path / "c" / TRAIN_FILE) == [["a b", "x  y", "p q", "z", "草 草"]]
    assert sid
    export_corpus(engine, VOCAB, out=tmp_path / "all")
    lines = (tmp_path / "all" / TRAIN_FILE).read_text(encoding="utf-8").split("\n")
    bas = [line for line in lines if line.startswith("def text c {")]
    assert len(bas) == 1 and "content = " in bas[0] and bas[0].endswith("} 5s")  # the fixture's BAS record
    assert "沙雕哈哈哈 啊" in lines  # an inner \r


def test_time_order_and_ties_by_id(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    add_video(engine, 2, ["三", "一", "二甲", "二乙"], times=[3000, 1000, 2000, 2000])
    add_video(engine, 1, ["后"], times=[0])
    export_corpus(engine, VOCAB, out=tmp_path / "c")
    # Documents in source.id order (the first source stored first), danmaku by (time, id).
    assert documents(tmp_path / "c" / TRAIN_FILE) == [["一", "二甲", "二乙", "三"], ["后"]]


def test_sources_without_kept_danmaku_make_no_document(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    add_video(engine, 1, ["草"])
    add_video(engine, 2, ["🤣", "😀😀", " "])
    add_video(engine, 3, ["好"])
    result = export_corpus(engine, VOCAB, out=tmp_path / "c")
    assert documents(tmp_path / "c" / TRAIN_FILE) == [["草"], ["好"]]
    counts = result.manifest["counts"]
    assert counts["sources_without_document"] == 1
    assert counts["dropped_by_reason"] == {"no_tokens": 1, "unk": 2}


def test_same_store_same_bytes_and_version(db_url, tmp_path):
    engine = filled(db_url)
    first = export_corpus(engine, VOCAB, root=tmp_path / "corpora")
    again = export_corpus(engine, VOCAB, out=tmp_path / "again")
    assert (first.path / TRAIN_FILE).read_bytes() == (again.path / TRAIN_FILE).read_bytes()
    assert first.manifest["version"] == again.manifest["version"]
    assert first.path == tmp_path / "corpora" / first.manifest["version"]
    assert mf.identity(first.manifest) == mf.identity(again.manifest)
    # Exporting the same again into the default place changes nothing.
    third = export_corpus(engine, VOCAB, root=tmp_path / "corpora", name="other")
    assert not third.created and third.path == first.path
    assert [p.name for p in (tmp_path / "corpora").iterdir()] == [first.manifest["version"]]


@pytest.mark.postgres
def test_sqlite_and_postgresql_give_the_same_corpus(sqlite_url, postgres_url, tmp_path):
    options = ExportOptions(eval_fraction=0.3, eval_rooms=(1603600,))
    on_sqlite = export_corpus(filled(sqlite_url), VOCAB, out=tmp_path / "sqlite", options=options)
    on_postgres = export_corpus(filled(postgres_url), VOCAB, out=tmp_path / "pg", options=options)
    for name in (TRAIN_FILE, EVAL_FILE):
        assert (tmp_path / "sqlite" / name).read_bytes() == (tmp_path / "pg" / name).read_bytes()
    assert mf.identity(on_sqlite.manifest) == mf.identity(on_postgres.manifest)


def test_workers_give_the_same_bytes(db_url, tmp_path):
    engine = filled(db_url)
    for aid in range(100, 130):
        add_video(engine, aid, [f"第{aid}号", "草"])
    options = ExportOptions(eval_fraction=0.25, min_danmaku_per_doc=2, collapse_repeats=True)
    one = export_corpus(engine, VOCAB, out=tmp_path / "one", options=options, chunk_rows=7)
    many = export_corpus(engine, VOCAB, out=tmp_path / "many", options=options, chunk_rows=7, workers=3)
    for name in (TRAIN_FILE, EVAL_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()
    assert mf.identity(one.manifest) == mf.identity(many.manifest)


def first_lines(path: Path) -> set[str]:
    return {doc[0] for doc in documents(path)}


def test_eval_split_is_by_whole_source_and_stable_as_the_store_grows(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    for aid in range(1, 61):
        add_video(engine, aid, [f"视频{aid}", f"第二条{aid}"])
    options = ExportOptions(eval_fraction=0.3)
    export_corpus(engine, VOCAB, out=tmp_path / "before", options=options)
    eval_before = first_lines(tmp_path / "before" / EVAL_FILE)
    train_before = first_lines(tmp_path / "before" / TRAIN_FILE)
    assert 8 <= len(eval_before) <= 30 and len(eval_before) + len(train_before) == 60
    # The split is the documented rule: sha256 of the source key below the fraction.
    assert eval_before == {f"视频{aid}" for aid in range(1, 61)
                           if eval_hash(source_key_video(aid, 1)) < 0.3}
    for doc in documents(tmp_path / "before" / EVAL_FILE):
        aid = doc[0].removeprefix("视频")
        assert doc == [f"视频{aid}", f"第二条{aid}"]  # whole sources only
    for aid in range(61, 121):
        add_video(engine, aid, [f"视频{aid}", f"第二条{aid}"])
    export_corpus(engine, VOCAB, out=tmp_path / "after", options=options)
    old = {f"视频{aid}" for aid in range(1, 61)}
    assert first_lines(tmp_path / "after" / EVAL_FILE) & old == eval_before
    assert first_lines(tmp_path / "after" / TRAIN_FILE) & old == train_before


def test_eval_rooms_take_all_broadcasts_of_the_room(db_url, tmp_path, google):
    engine = filled(db_url)
    result = export_corpus(engine, VOCAB, out=tmp_path / "c", options=ExportOptions(eval_rooms=(1603600,)))
    with engine.connect() as conn:
        room = set(conn.execute(select(Source.id).where(Source.room_id == 1603600)).scalars())
    train, evals = expected_documents(engine, google, eval_=room)
    assert documents(tmp_path / "c" / EVAL_FILE) == evals and len(evals) == len(room) == 4
    assert documents(tmp_path / "c" / TRAIN_FILE) == train
    assert result.manifest["counts"]["documents_by_file"] == {TRAIN_FILE: len(train), EVAL_FILE: 4}


def test_selection_by_kind_owner_and_time(sqlite_url, tmp_path):
    engine = filled(sqlite_url)
    add_video(engine, 1, ["早", "中", "晚"], mid=42, times=[1000, 2000, 3000])
    add_video(engine, 2, ["别的"], mid=43, times=[1500])

    def lines(**kw) -> list[list[str]]:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        export_corpus(engine, VOCAB, out=out, selection=Selection(**kw))
        return documents(out / TRAIN_FILE)

    assert lines(uploaders=(42,)) == [["早", "中", "晚"]]
    assert lines(uploaders=(42,), since_ms=2000, until_ms=3000) == [["中"]]
    assert lines(uploaders=(42, 43), until_ms=1600) == [["早"], ["别的"]]
    live = lines(kind=LIVE_BROADCAST)
    with engine.connect() as conn:
        broadcasts = conn.execute(select(Source.id).where(Source.kind == LIVE_BROADCAST)).all()
    assert len(live) == len(broadcasts) >= 8
    assert lines(rooms=(1603600,)) + lines(rooms=(10001030,)) == live  # imported in room order
    assert lines(kind=VIDEO_PAGE, uploaders=(42,), rooms=(1603600,)) == [["早", "中", "晚"]]
    with pytest.raises(ExportError, match="no source"):
        export_corpus(engine, VOCAB, out=tmp_path / "none", selection=Selection(rooms=(999,)))


def test_options_are_off_by_default_and_recorded(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    add_video(engine, 1, ["草", "草", "好的", "草", "草", "很长很长的一条弹幕"])
    add_video(engine, 2, ["一", "二"])
    plain = export_corpus(engine, VOCAB, out=tmp_path / "plain")
    assert documents(tmp_path / "plain" / TRAIN_FILE) == [
        ["草", "草", "好的", "草", "草", "很长很长的一条弹幕"], ["一", "二"]]
    assert plain.manifest["settings"]["collapse_repeats"] is False
    options = ExportOptions(min_danmaku_per_doc=3, collapse_repeats=True, max_chars=4)
    trimmed = export_corpus(engine, VOCAB, out=tmp_path / "trimmed", options=options)
    assert documents(tmp_path / "trimmed" / TRAIN_FILE) == [["草", "好的", "草"]]
    assert trimmed.manifest["counts"]["dropped_by_reason"] == {
        "repeat": 2, "small_document": 2, "too_long": 1}
    settings = trimmed.manifest["settings"]
    assert settings["min_danmaku_per_doc"] == 3 and settings["collapse_repeats"] is True
    assert settings["max_chars"] == 4
    assert trimmed.manifest["counts"]["danmaku_kept"] == 3


def test_version_is_the_documented_hash(sqlite_url, tmp_path):
    engine = filled(sqlite_url)
    single = export_corpus(engine, VOCAB, out=tmp_path / "single")
    digest = hashlib.sha256((tmp_path / "single" / TRAIN_FILE).read_bytes()).hexdigest()
    assert single.manifest["version"] == digest[:12]
    assert single.manifest["files"][TRAIN_FILE]["sha256"] == digest
    split = export_corpus(engine, VOCAB, out=tmp_path / "split", options=ExportOptions(eval_rooms=(1603600,)))
    listing = "".join(f"{hashlib.sha256((tmp_path / 'split' / n).read_bytes()).hexdigest()}  {n}\n"
                      for n in sorted([TRAIN_FILE, EVAL_FILE]))
    assert split.manifest["version"] == hashlib.sha256(listing.encode()).hexdigest()[:12]
    on_disk = json.loads((tmp_path / "split" / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == split.manifest
    assert on_disk["vocab"]["google_chinese_bert"] is True
    assert mf.verify(tmp_path / "split", on_disk) == []


def test_failure_midway_leaves_nothing_that_looks_complete(sqlite_url, tmp_path, monkeypatch):
    engine = filled(sqlite_url)
    calls = {"n": 0}
    original = VocabFilter.decide_batch

    def failing(self, texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return original(self, texts)

    monkeypatch.setattr(VocabFilter, "decide_batch", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_corpus(engine, VOCAB, root=tmp_path / "corpora", chunk_rows=10)
    with pytest.raises(RuntimeError, match="disk on fire"):
        calls["n"] = 0
        export_corpus(engine, VOCAB, out=tmp_path / "out", chunk_rows=10)
    assert list((tmp_path / "corpora").iterdir()) == []
    assert not (tmp_path / "out").exists()
    # What a kill -9 would leave (a hidden staging dir) is not a corpus.
    (tmp_path / "corpora" / ".danmaku-export-x.partial").mkdir()
    ((tmp_path / "corpora" / ".danmaku-export-x.partial") / TRAIN_FILE).write_text("half\n")
    assert mf.list_corpora(tmp_path / "corpora") == []


def test_an_existing_different_corpus_is_kept_unless_forced(sqlite_url, tmp_path):
    engine = filled(sqlite_url)
    first = export_corpus(engine, VOCAB, out=tmp_path / "c")
    before = (tmp_path / "c" / TRAIN_FILE).read_bytes()
    with pytest.raises(ExportError, match="another corpus"):
        export_corpus(engine, VOCAB, out=tmp_path / "c", options=ExportOptions(max_chars=3))
    assert (tmp_path / "c" / TRAIN_FILE).read_bytes() == before
    forced = export_corpus(engine, VOCAB, out=tmp_path / "c", options=ExportOptions(max_chars=3), force=True)
    assert forced.created and forced.manifest["version"] != first.manifest["version"]
    assert mf.read_manifest(tmp_path / "c")["settings"]["max_chars"] == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a corpus"):
        export_corpus(engine, VOCAB, out=tmp_path / "other")


def test_nothing_kept_is_an_error(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    add_video(engine, 1, ["🤣"])
    with pytest.raises(ExportError, match="no danmaku kept"):
        export_corpus(engine, VOCAB, out=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_one_line():
    assert one_line(" a\r\nb\tc\u2028d\x85e ") == "a  b c d e"
    assert one_line("\n草\n") == "草"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab草 \t\n\r\x0b\x0c\x1c\x85\u2028\u2029\u3000\x00"),
                        max_size=8), max_size=12))
def test_one_line_batch_is_one_line_of_each(texts):
    assert one_line_batch(texts) == [one_line(t) for t in texts]


def test_memory_stays_bounded():
    """The only cache grows to its limit and no further, whatever the input."""
    vocab_filter = VocabFilter(VOCAB, cache_limit=50)
    for start in range(0, 2000, 100):
        vocab_filter.decide_batch([f"word{n}x 草" for n in range(start, start + 100)])
        assert len(vocab_filter._runs) <= 50 + 100


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(sqlite_url, tmp_path):
    """A kill -9 leaves a hidden staging folder; the next export removes it, never a live one."""
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "corpora"
    host = socket.gethostname()
    left_behind = root / f".danmaku-export-{host}-{dead.pid}-{'a' * 12}.partial"
    being_written = root / f".danmaku-export-{host}-{os.getpid()}-{'b' * 12}.partial"
    other_host = root / f".danmaku-export-elsewhere-{dead.pid}-{'c' * 12}.partial"
    for folder in (left_behind, being_written, other_host):
        folder.mkdir(parents=True)
        (folder / TRAIN_FILE).write_text("half\n")
    export_corpus(filled(sqlite_url), VOCAB, root=root)
    assert not left_behind.exists()
    assert being_written.exists() and other_host.exists()
