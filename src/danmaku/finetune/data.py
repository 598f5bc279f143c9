"""Labelled CSVs (``text,label``) -> checked rows -> token-id arrays for the classifier.

Any CSV a user brings is read the same way as the ones ``danmaku tasks make``
writes: UTF-8 (a BOM is tolerated), RFC 4180 quoting (a quoted text may hold
commas and line breaks), exactly two columns, an optional ``text,label`` header
(``label,text`` is understood too). A row that cannot be used is counted under
its reason and left out, never fatal, so one stray line does not waste a run:

* ``wrong column count``: not exactly two fields;
* ``empty text`` / ``empty label``: nothing left after stripping spaces;
* ``unknown label``: a dev/test label the training file does not have (the
  classifier cannot predict it, so scoring it would only measure that).

The first few bad rows keep their line numbers for the message. Labels are the
training file's distinct labels in sorted order, so the same CSV always gives
the same label ids.

Tokens are Google-exact word pieces (``danmaku.text.tokenizer.BertTokenizer``,
the one tokenizer of pretraining and embedding), framed ``[CLS] pieces [SEP]``
and cut to ``max_seq_len`` as Google's ``run_classifier.py`` does for a single
sentence; texts cut short are counted.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from danmaku.artifacts import sha256_file

HEADER = ("text", "label")
WRONG_COLUMNS = "wrong column count"
EMPTY_TEXT = "empty text"
EMPTY_LABEL = "empty label"
UNKNOWN_LABEL = "unknown label"
EXAMPLES_KEPT = 5


class DataError(ValueError):
    """A CSV that cannot be used at all (missing, not UTF-8, no usable rows)."""


@dataclass
class LabelledRows:
    """The usable rows of one CSV and what was left out, by reason."""

    path: Path
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    bad: Counter = field(default_factory=Counter)
    bad_examples: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), first few
    records: int = 0  # data records read (header excluded)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def _reject(self, line: int, reason: str) -> None:
        self.bad[reason] += 1
        if len(self.bad_examples) < EXAMPLES_KEPT:
            self.bad_examples.append((line, reason))

    def problems(self) -> str:
        """One line for the user: how many rows were left out and why, with where."""
        if not self.bad:
            return ""
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.bad.items()))
        where = ", ".join(f"line {line} ({reason})" for line, reason in self.bad_examples)
        return f"{self.path}: left out {self.bad_total} of {self.records} row(s): {reasons}; first: {where}"

    def as_manifest(self) -> dict:
        return {"path": str(self.path), "sha256": sha256_file(self.path), "records": self.records,
                "rows": len(self), "left_out": dict(sorted(self.bad.items()))}


def read_labelled_csv(path: str | Path, known_labels: Sequence[str] | None = None) -> LabelledRows:
    """The usable ``(text, label)`` rows of ``path``; with ``known_labels``, others are unknown.

    Texts and labels are stripped of surrounding whitespace; nothing else changes.
    Raises ``DataError`` for a missing or non-UTF-8 file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV not found: {path}")
    known = set(known_labels) if known_labels is not None else None
    out = LabelledRows(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            order = (0, 1)
            first = True
            for record in reader:
                line = reader.line_num
                if first:
                    first = False
                    names = tuple(cell.strip().lower() for cell in record)
                    if names in (HEADER, HEADER[::-1]):
                        order = (names.index("text"), names.index("label"))
                        continue
                if not record:  # a blank line: no record at all, not counted
                    continue
                out.records += 1
                if len(record) != 2:
                    out._reject(line, WRONG_COLUMNS)
                    continue
                text, label = record[order[0]].strip(), record[order[1]].strip()
                if not text:
                    out._reject(line, EMPTY_TEXT)
                elif not label:
                    out._reject(line, EMPTY_LABEL)
                elif known is not None and label not in known:
                    out._reject(line, UNKNOWN_LABEL)
                else:
                    out.texts.append(text)
                    out.labels.append(label)
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 (byte {err.start} of a block: {err.reason}); "
                        "save it as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV: {err}") from None
    return out


def label_set(train: LabelledRows) -> list[str]:
    """The classes of a training file, sorted; at least two are needed to learn anything."""
    labels = sorted(set(train.labels))
    if len(labels) < 2:
        raise DataError(f"{train.path} has {len(labels)} distinct label(s) among {len(train)} usable row(s); "
                        "a classifier needs at least two")
    return labels


@dataclass
class Encoded:
    """Token ids padded to ``max_seq_len`` (``ids`` [n, max_seq_len]), real lengths, label ids."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    truncated: int

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(token_ids, padding_mask, label ids) of ``rows``, padded to their longest member."""
        width = int(self.lengths[rows].max())
        ids = self.ids[rows, :width]
        mask = (np.arange(width)[None, :] < self.lengths[rows, None]).astype(np.int32)
        return ids, mask, self.labels[rows]


def encode_rows(tokenizer, texts: Sequence[str], label_ids: Sequence[int], max_seq_len: int,
                chunk: int = 4096) -> Encoded:
    """Word pieces of every text, framed ``[CLS] .. [SEP]`` and cut to ``max_seq_len``."""
    if max_seq_len < 3:
        raise ValueError(f"max_seq_len must be at least 3 ([CLS], a token, [SEP]), got {max_seq_len}")
    cls_id, sep_id = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    keep = max_seq_len - 2
    ids = np.zeros((len(texts), max_seq_len), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    truncated = 0
    for start in range(0, len(texts), chunk):
        for i, pieces in enumerate(tokenizer.ids_batch(texts[start:start + chunk]), start=start):
            truncated += len(pieces) > keep
            row = [cls_id, *pieces[:keep], sep_id]
            ids[i, :len(row)] = row
            lengths[i] = len(row)
    return Encoded(ids, lengths, np.asarray(label_ids, dtype=np.int32), truncated)
