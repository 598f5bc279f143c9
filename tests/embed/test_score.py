"""The group MRR score on a toy case with a hand-computed answer, and the default groups."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import danmaku.embed
from danmaku.embed.neighbors import nearest
from danmaku.embed.score import DEFAULT_GROUPS, chance_reciprocal_rank, group_mrr, read_groups
from danmaku.embed.texts import read_phrases
from tests.conftest import SHARED_DATA

EMBED = Path(danmaku.embed.__file__).resolve().parent

# Five phrases on the unit circle at these angles (degrees); cosine falls with the angle between.
ANGLES = {"a": 0, "b": 10, "x": 30, "c": 90, "d": 160}
PHRASES = list(ANGLES)
VECTORS = np.array([[np.cos(np.radians(t)), np.sin(np.radians(t))] for t in ANGLES.values()])


def test_toy_case_by_hand():
    # group {a, b}: a's nearest is b (rank 1), b's nearest is a (rank 1)
    # group {a, c}: from a: b(10) x(30) c(90) -> c is 3rd; from c: x(60) d(70) b(80) a(90) -> 4th
    # group {x, d}: from x: b(20) a(30) c(60) d(130) -> 4th; from d: c(70) x(130) -> x is 2nd
    score = group_mrr(PHRASES, VECTORS, [["a", "b"], ["a", "c"], ["x", "d"]])
    assert [g.ranks for g in score.groups] == [{"a": 1, "b": 1}, {"a": 3, "c": 4}, {"x": 4, "d": 2}]
    assert score.mrr == pytest.approx((1 + 1 + 1 / 3 + 1 / 4 + 1 / 4 + 1 / 2) / 6)
    assert score.queries == 6
    # chance for one mate among 4 others: (1 + 1/2 + 1/3 + 1/4) / 4
    assert score.chance == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_three_member_group_uses_the_best_placed_mate():
    # from x: b(20) is a mate -> rank 1; from b: a(10) is not, x(20) is -> 2; from d: c(70) x(130) -> 2
    score = group_mrr(PHRASES, VECTORS, [["x", "b", "d"]])
    assert score.groups[0].ranks == {"x": 1, "b": 2, "d": 2}


def test_ties_count_against_the_model():
    same = np.ones((4, 3))  # a model that maps everything to one point learns nothing
    score = group_mrr(["p", "q", "r", "s"], same, [["p", "q"]])
    assert score.groups[0].ranks == {"p": 3, "q": 3}


def test_missing_members_are_reported_and_small_groups_skipped():
    score = group_mrr(PHRASES, VECTORS, [["a", "b", "zz"], ["c", "yy"]])
    assert score.missing == ["zz", "yy"]
    assert score.skipped == [["c", "yy"]]
    assert len(score.groups) == 1
    with pytest.raises(ValueError, match="no group"):
        group_mrr(PHRASES, VECTORS, [["c", "yy"]])


@pytest.mark.parametrize(("n", "m"), [(4, 1), (6, 2), (7, 3)])
def test_chance_equals_enumeration(n, m):
    ranks = []
    for order in itertools.permutations(range(n)):
        ranks.append(1 / (1 + min(order.index(i) for i in range(m))))
    assert chance_reciprocal_rank(n, m) == pytest.approx(np.mean(ranks))


def test_nearest_excludes_the_query_and_orders_by_cosine():
    assert [i for i, _ in nearest(VECTORS[2], VECTORS, 3, exclude=2)] == [1, 0, 3]
    assert nearest(VECTORS[0], VECTORS, 1)[0] == (0, pytest.approx(1.0))


def test_default_groups_are_the_studys_and_all_candidates():
    groups = read_groups(DEFAULT_GROUPS)
    assert groups[0] == ["mea", "aqua", "阿夸", "meaqua"]
    assert len(groups) == 7
    phrases = read_phrases(EMBED / "meme_phrases.txt")
    assert phrases == read_phrases(SHARED_DATA / "meme_phrases.txt")  # the shipped copy is the study's
    assert len(phrases) == 92
    assert all(member in phrases for group in groups for member in group)


def test_groups_file_errors(tmp_path):
    bad = tmp_path / "g.txt"
    bad.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no groups"):
        read_groups(bad)
    bad.write_text("a / b\nlonely\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"g.txt:2: a group needs at least two"):
        read_groups(bad)
    with pytest.raises(FileNotFoundError):
        read_groups(tmp_path / "nope.txt")
