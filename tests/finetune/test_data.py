"""Reading users' labelled CSVs: what is kept, what is left out and counted, and the clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from danmaku.finetune.data import (
    EMPTY_LABEL,
    EMPTY_TEXT,
    UNKNOWN_LABEL,
    WRONG_COLUMNS,
    DataError,
    label_set,
    read_labelled_csv,
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_quoting_header_and_bad_rows(tmp_path: Path):
    path = write(tmp_path / "a.csv", (
        "text,label\r\n"
        '"草, 笑死",a\r\n'            # a comma inside quotes
        '"第一行\n第二行",b\r\n'       # a line break inside quotes
        "  阿夸  ,  a \r\n"           # stripped
        "only one column\r\n"
        "x,y,z\r\n"
        " ,a\r\n"
        "晚安,\r\n"
        "\r\n"                        # a blank line is no record
        "好,c\r\n"))
    rows = read_labelled_csv(path, known_labels=["a", "b"])
    assert list(zip(rows.texts, rows.labels, strict=True)) == [("草, 笑死", "a"), ("第一行\n第二行", "b"),
                                                                ("阿夸", "a")]
    assert rows.bad == {WRONG_COLUMNS: 2, EMPTY_TEXT: 1, EMPTY_LABEL: 1, UNKNOWN_LABEL: 1}
    assert rows.records == 8
    message = rows.problems()
    assert "left out 5 of 8 row(s)" in message and "2 wrong column count" in message
    assert "line 6 (wrong column count)" in message  # physical line numbers, after the two-line record


def test_swapped_header_bom_and_no_header(tmp_path: Path):
    swapped = read_labelled_csv(write(tmp_path / "s.csv", "\ufefflabel,text\nx,晚安\ny,草\n"))
    assert swapped.texts == ["晚安", "草"] and swapped.labels == ["x", "y"]
    plain = read_labelled_csv(write(tmp_path / "p.csv", "晚安,x\n草,y\n"))
    assert plain.texts == ["晚安", "草"] and not plain.bad
    assert label_set(plain) == ["x", "y"]


def test_unusable_files_are_one_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        read_labelled_csv(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="not UTF-8"):
        read_labelled_csv(write(tmp_path / "gbk.csv", "晚安,x\n", encoding="gbk"))
    with pytest.raises(DataError, match="at least two"):
        label_set(read_labelled_csv(write(tmp_path / "one.csv", "a,x\nb,x\n")))
