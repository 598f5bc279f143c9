"""Which classes a task has, and which split each of their sources goes to.

Pure functions over per-source row counts (one aggregate query of the store,
``make.py``), so the plan is the same on SQLite and PostgreSQL and can be
tested without a database.

Splitting is **by source**: every video page (uploader task) or broadcast
(room task) goes whole to one of train/dev/test, so a test comment never
shares a video with a training comment (comments under one video repeat each
other, and a split by line would reward memorising them). Within a class,
sources are ordered by a hash of their key salted with the seed and
each goes to the split furthest below its share of the class's rows so far;
a split left without the class then gets the smallest source of the split
holding the most sources (every split sees every class). The result depends
on the seed, the keys and the counts only, never on database ids or the order
rows come back in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

SPLITS = ("train", "dev", "test")
MIN_SOURCES = len(SPLITS)  # one source per split at least


@dataclass(frozen=True, slots=True)
class SourceCount:
    """One source of the store: its id, natural key, class and stored danmaku."""

    id: int
    key: str
    owner: int
    rows: int


@dataclass(frozen=True)
class ClassChoice:
    """How classes are picked: explicit ``only``, else the ``classes`` largest eligible ones."""

    classes: int | None = 10
    min_per_class: int = 100
    only: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.classes is not None and self.classes < 2:
            raise ValueError(f"a task needs at least 2 classes, got --classes {self.classes}")
        if self.min_per_class < 0:
            raise ValueError("min_per_class must not be negative")
        if self.only and len(set(self.only)) < 2:
            raise ValueError("name at least two distinct classes")


class PlanError(ValueError):
    """The store cannot give the task asked for (the message says what it has)."""


def seed_salt(seed: int) -> bytes:
    return seed.to_bytes(8, "big", signed=True)


def keyed_hash(seed: int, text: str) -> int:
    """A 64-bit hash of ``text`` under ``seed`` (blake2b salted with the seed): stable across runs
    and machines. (A salt, not a key: a keyed blake2b costs a whole extra block per call, 2.4 vs
    1.1 us, and nothing here is secret.)"""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, salt=seed_salt(seed))
    return int.from_bytes(digest.digest(), "big")


def by_owner(sources: Sequence[SourceCount]) -> dict[int, list[SourceCount]]:
    out: dict[int, list[SourceCount]] = {}
    for source in sources:
        if source.rows > 0:
            out.setdefault(source.owner, []).append(source)
    return out


def choose_classes(sources: Sequence[SourceCount], choice: ClassChoice) -> list[int]:
    """The owners (uploader mids or room ids) that become classes, sorted.

    Eligible: at least ``MIN_SOURCES`` sources with danmaku and at least
    ``min_per_class`` danmaku stored (counted before the vocab filter). Without
    ``only``, the ``classes`` eligible owners with the most danmaku (ties: lower id).
    """
    groups = by_owner(sources)
    totals = {owner: sum(s.rows for s in group) for owner, group in groups.items()}

    def why_not(owner: int) -> str | None:
        if owner not in groups:
            return "no danmaku in the store"
        if len(groups[owner]) < MIN_SOURCES:
            return f"only {len(groups[owner])} source(s) with danmaku (a class needs {MIN_SOURCES})"
        if totals[owner] < choice.min_per_class:
            return f"only {totals[owner]} danmaku (--min-per-class {choice.min_per_class})"
        return None

    if choice.only:
        problems = [f"{owner}: {reason}" for owner in sorted(set(choice.only))
                    if (reason := why_not(owner)) is not None]
        if problems:
            raise PlanError("cannot use " + "; ".join(problems))
        return sorted(set(choice.only))
    eligible = [owner for owner in groups if why_not(owner) is None]
    if len(eligible) < 2:
        raise PlanError(f"the store has {len(eligible)} eligible class(es) of {len(groups)} with danmaku "
                        f"(each needs >= {MIN_SOURCES} sources and >= {choice.min_per_class} danmaku); "
                        "import more data or lower --min-per-class")
    eligible.sort(key=lambda owner: (-totals[owner], owner))
    return sorted(eligible[:choice.classes] if choice.classes else eligible)


def split_fractions(dev: float, test: float) -> dict[str, float]:
    if not (0 < dev < 1 and 0 < test < 1 and dev + test < 1):
        raise ValueError(f"dev and test fractions must be in (0, 1) and leave room for train, "
                         f"got {dev}, {test}")
    return {"train": 1.0 - dev - test, "dev": dev, "test": test}


def assign_splits(group: Sequence[SourceCount], fractions: dict[str, float], seed: int) -> dict[int, str]:
    """Source id -> split for one class's sources (module docstring)."""
    order = sorted(group, key=lambda s: (keyed_hash(seed, s.key), s.key))
    rows = dict.fromkeys(SPLITS, 0)
    out: dict[int, str] = {}
    for source in order:
        total = sum(rows.values()) + source.rows
        split = max(SPLITS, key=lambda s: (fractions[s] * total - rows[s], -SPLITS.index(s)))
        out[source.id] = split
        rows[split] += source.rows
    for empty in SPLITS[::-1]:  # test, dev, train: each needs the class at least once
        members = {split: [s for s in order if out[s.id] == split] for split in SPLITS}
        if members[empty]:
            continue
        donor = max(SPLITS, key=lambda split: (len(members[split]), -SPLITS.index(split)))
        if len(members[donor]) < 2:
            break  # fewer than three sources: nothing to move
        smallest = min(members[donor], key=lambda s: s.rows)  # first in hash order among equals
        out[smallest.id] = empty
    return out


def split_caps(max_per_class: int | None, fractions: dict[str, float]) -> dict[str, int | None]:
    """Rows kept per class and split: dev and test get their share, train the rest."""
    if max_per_class is None:
        return dict.fromkeys(SPLITS)
    dev = round(max_per_class * fractions["dev"])
    test = round(max_per_class * fractions["test"])
    return {"train": max_per_class - dev - test, "dev": max(dev, 1), "test": max(test, 1)}
