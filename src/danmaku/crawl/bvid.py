"""BV id <-> av id (aid), the reversible 2024 transform.

Users paste either form; the crawler asks for every video by aid, so the same
video given as ``BV...`` and as ``av...`` is one request (and one dupefilter
entry). Algorithm: ``../shared/docs/bilibili-api.md`` (BV <-> av).
"""

from __future__ import annotations

ALPHABET = "FcwAPNKTMug3GV5Lj7EJnHpWsx4tb8haYeviqBz6rkCy12mUSDQX9RdoZf"
XOR_CODE = 23442827791579
MAX_AID = 1 << 51
MASK_CODE = MAX_AID - 1
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_TEMPLATE = "BV1000000000"


def _swap(chars: list[str]) -> None:
    chars[3], chars[9] = chars[9], chars[3]
    chars[4], chars[7] = chars[7], chars[4]


def av_to_bv(aid: int) -> str:
    """``170001`` -> ``'BV17x411w7KC'``."""
    if not 0 < aid < MAX_AID:
        raise ValueError(f"aid out of range: {aid}")
    chars = list(_TEMPLATE)
    n = (MAX_AID | aid) ^ XOR_CODE
    position = len(chars) - 1
    while n:
        n, digit = divmod(n, 58)
        chars[position] = ALPHABET[digit]
        position -= 1
    _swap(chars)
    return "".join(chars)


def bv_to_av(bvid: str) -> int:
    """``'BV17x411w7KC'`` -> ``170001``; ValueError for anything that is not a BV id."""
    if len(bvid) != 12 or bvid[:3].upper() != "BV1":
        raise ValueError(f"not a BV id: {bvid!r}")
    chars = list("BV1" + bvid[3:])
    _swap(chars)
    n = 0
    for c in chars[3:]:
        digit = _INDEX.get(c)
        if digit is None:
            raise ValueError(f"not a BV id: {bvid!r} (bad character {c!r})")
        n = n * 58 + digit
    if n >> 51 != 1:  # a BV id encodes 2^51 | aid in 52 bits
        raise ValueError(f"not a BV id: {bvid!r}")
    return (n & MASK_CODE) ^ XOR_CODE
