"""The number the study never had: do phrases the community links sit together?

Groups (``meme_groups.txt``: one group per line, members separated by ``/``)
name phrases that belong together. The candidate set is the phrase list
(default: the study's 92 meme phrases); a group member that is not a candidate
is reported and dropped, and a group left with fewer than two members is skipped.

For every member ``p`` of a group ``G`` (a *query*), all other candidates are
ranked by cosine similarity to ``p``. Its rank is that of the best-placed other
member of ``G``, counted pessimistically on ties: ``1 + #{c not in G :
cos(p, c) >= max over q in G - {p} of cos(p, q)}``. The score is the mean of
``1 / rank`` over all queries (mean reciprocal rank, 1.0 = every phrase's
nearest neighbour is a group mate). ``chance`` is the same mean for a random
ranking, the floor to compare against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import comb
from pathlib import Path

import numpy as np

from danmaku.embed.neighbors import cosine_similarities

DEFAULT_GROUPS = Path(__file__).with_name("meme_groups.txt")


def read_groups(path: str | Path) -> list[list[str]]:
    """Groups from a file: one per line, members separated by ``/``, ``#`` comments."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"groups file not found: {path}")
    groups = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            members = list(dict.fromkeys(m.strip() for m in line.split("/") if m.strip()))
            if len(members) < 2:
                raise ValueError(f"{path}:{number}: a group needs at least two members, got {members}")
            groups.append(members)
    if not groups:
        raise ValueError(f"{path} holds no groups")
    return groups


@dataclass
class GroupScore:
    members: list[str]
    ranks: dict[str, int]  # query phrase -> rank of its best group mate

    @property
    def mrr(self) -> float:
        return float(np.mean([1.0 / r for r in self.ranks.values()]))


@dataclass
class Score:
    mrr: float
    chance: float
    groups: list[GroupScore]
    missing: list[str] = field(default_factory=list)  # group members not among the candidates
    skipped: list[list[str]] = field(default_factory=list)  # groups left with < 2 members

    @property
    def queries(self) -> int:
        return sum(len(g.ranks) for g in self.groups)


def chance_reciprocal_rank(candidates: int, mates: int) -> float:
    """E[1/rank of the first of ``mates`` items] in a random order of ``candidates`` items."""
    total = comb(candidates, mates)
    return sum(comb(candidates - r, mates - 1) / total / r for r in range(1, candidates - mates + 2))


def usable_groups(
    groups: Sequence[Sequence[str]], phrases: Sequence[str]
) -> tuple[list[list[str]], list[str], list[list[str]]]:
    """Groups restricted to candidate phrases, the members dropped, the groups skipped."""
    known = set(phrases)
    kept, missing, skipped = [], [], []
    for group in groups:
        present = [m for m in group if m in known]
        missing += [m for m in group if m not in known]
        if len(present) >= 2:
            kept.append(present)
        else:
            skipped.append(list(group))
    return kept, missing, skipped


def group_mrr(phrases: Sequence[str], vectors: np.ndarray, groups: Sequence[Sequence[str]]) -> Score:
    """Mean reciprocal rank of a group mate among each group member's neighbours."""
    if len(phrases) != len(vectors):
        raise ValueError(f"{len(phrases)} phrases but {len(vectors)} vectors")
    index = {p: i for i, p in enumerate(phrases)}
    kept, missing, skipped = usable_groups(groups, phrases)
    if not kept:
        raise ValueError("no group has two members among the candidate phrases")
    sims = cosine_similarities(vectors, vectors)
    n = len(phrases)
    scored, chances = [], []
    for members in kept:
        ids = [index[m] for m in members]
        in_group = np.zeros(n, dtype=bool)
        in_group[ids] = True
        ranks = {}
        for m, i in zip(members, ids, strict=True):
            best = max(sims[i, j] for j in ids if j != i)
            ranks[m] = 1 + int(np.sum(sims[i, ~in_group] >= best))
            chances.append(chance_reciprocal_rank(n - 1, len(ids) - 1))
        scored.append(GroupScore(members, ranks))
    reciprocal = [1.0 / r for g in scored for r in g.ranks.values()]
    return Score(float(np.mean(reciprocal)), float(np.mean(chances)), scored, missing, skipped)
