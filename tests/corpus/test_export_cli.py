"""``danmaku corpus export|list|show`` through the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from danmaku.artifacts import CORPUS_TRAIN_FILE as TRAIN_FILE
from danmaku.cli.main import app
from danmaku.importers.live_chat import import_live_chat
from danmaku.importers.video_csv import import_video_csv
from danmaku.store.db import make_engine
from tests.conftest import FIXTURES, SHARED_DATA

VOCAB = str(SHARED_DATA / "vocab.txt")


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "danmaku.sqlite"
    engine = make_engine(str(path))
    import_video_csv(engine, FIXTURES / "export" / "video", workers=1)
    import_live_chat(engine, FIXTURES / "export" / "live")
    engine.dispose()
    return str(path)


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_export_list_show(store, tmp_path):
    root = str(tmp_path / "corpora")
    result = run("corpus", "export", "--db", store, "--vocab", VOCAB, "--root", root, "--name", "fixture",
                 "--eval-rooms", "1603600", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    version = manifest["version"]
    assert (tmp_path / "corpora" / version / TRAIN_FILE).is_file()
    assert manifest["settings"]["eval_rooms"] == [1603600] and manifest["name"] == "fixture"
    assert f"cite as: danmaku corpus {version}" in result.output

    listed = run("corpus", "list", "--root", root, "--json")
    assert listed.exit_code == 0
    assert [m["version"] for m in json.loads(listed.stdout)] == [version]
    table = run("corpus", "list", "--root", root)
    assert version in table.output and "fixture" in table.output

    for ref in (version, version[:6], "fixture"):
        shown = run("corpus", "show", ref, "--root", root, "--json")
        assert shown.exit_code == 0 and json.loads(shown.stdout)["version"] == version
    verified = run("corpus", "show", "fixture", "--root", root, "--verify")
    assert verified.exit_code == 0 and "files intact" in verified.output
    assert manifest["vocab"]["sha256"] in verified.output
    assert manifest["files"][TRAIN_FILE]["sha256"] in verified.output

    with open(tmp_path / "corpora" / version / TRAIN_FILE, "a", encoding="utf-8") as handle:
        handle.write("篡改\n")
    tampered = run("corpus", "show", version, "--root", root, "--verify")
    assert tampered.exit_code == 1 and "differs" in tampered.output
    assert run("corpus", "show", "nope", "--root", root).exit_code == 1


def test_user_errors_are_messages_not_tracebacks(store, tmp_path):
    missing = run("corpus", "export", "--db", store, "--vocab", str(tmp_path / "vocab.txt"),
                  "--root", str(tmp_path / "c"))
    assert missing.exit_code == 1 and "vocabulary not found" in missing.output
    empty = run("corpus", "export", "--db", store, "--vocab", VOCAB, "--root", str(tmp_path / "c"),
                "--room", "999")
    assert empty.exit_code == 1 and "no source" in empty.output
    assert run("corpus", "export", "--db", store, "--vocab", VOCAB, "--kind", "tv").exit_code == 2
    assert run("corpus", "export", "--db", store, "--vocab", VOCAB, "--since", "yesterday").exit_code == 2
    assert run("corpus", "export", "--db", store, "--vocab", VOCAB, "--eval-fraction", "1.5").exit_code == 2
    none_eval = run("corpus", "export", "--db", store, "--vocab", VOCAB, "--root", str(tmp_path / "c"),
                    "--eval-rooms", "999")
    assert none_eval.exit_code == 1 and "eval split is empty" in none_eval.output
    assert not (tmp_path / "c").exists() or not any(p for p in (tmp_path / "c").iterdir())


def test_selection_options(store, tmp_path):
    out = tmp_path / "live"
    result = run("corpus", "export", "--db", store, "--vocab", VOCAB, "--out", str(out), "--kind", "live",
                 "--since", "2021-01-01", "--collapse-repeats", "--max-chars", "20", "--workers", "2")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["selection"]["kind"] == "live_broadcast"
    assert manifest["selection"]["since_ms"] == 1_609_459_200_000
    assert set(manifest["counts"]["documents_by_kind"]) == {"live_broadcast"}
    assert all(len(line) <= 20 for line in (out / TRAIN_FILE).read_text(encoding="utf-8").split("\n"))


def test_help_shows_examples():
    for command in ("export", "list", "show"):
        result = run("corpus", command, "--help")
        assert result.exit_code == 0 and "Example: danmaku corpus" in result.output
