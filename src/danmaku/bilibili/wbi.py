"""WBI signing: ``wts`` (unix s) and ``w_rid`` (an md5 over the sorted query and a mixin key).

The key comes from two file names in ``nav``'s ``data.wbi_img`` and rotates
daily; callers cache it and fetch ``nav`` again on ``-352``. Pure functions:
the crawler's ``WbiMiddleware`` and the live recorder's ``getDanmuInfo`` call
these. Algorithm and test vectors: ``../shared/docs/bilibili-api.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from danmaku.bilibili import API

MIXIN_KEY_ORDER = (
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49, 33, 9, 42, 19, 29,
    28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25,
    54, 21, 56, 59, 6, 63, 57, 62, 11, 36, 20, 34, 44, 52,
)
_DROP_FROM_VALUES = str.maketrans("", "", "!'()*")
_URI_COMPONENT_SAFE = "!'()*"  # with quote()'s own A-Za-z0-9_.-~: encodeURIComponent's set


class WbiKeyError(RuntimeError):
    """``nav`` did not give usable WBI keys."""


def nav_url() -> str:
    """Logged-out account info whose ``data.wbi_img`` carries today's WBI keys."""
    return f"{API}/x/web-interface/nav"


def mixin_key(img_key: str, sub_key: str) -> str:
    """The 32-character signing key: ``img_key + sub_key`` reordered, truncated."""
    raw = img_key + sub_key
    if len(raw) != 64:
        raise WbiKeyError(f"WBI keys must be 32+32 characters, got {len(img_key)}+{len(sub_key)}")
    return "".join(raw[i] for i in MIXIN_KEY_ORDER)[:32]


def keys_from_nav(payload: Mapping) -> tuple[str, str]:
    """(img_key, sub_key): the file names, without extension, in ``data.wbi_img``."""
    try:
        wbi_img = payload["data"]["wbi_img"]
        return tuple(  # type: ignore[return-value]
            urlsplit(wbi_img[name]).path.rsplit("/", 1)[-1].split(".", 1)[0]
            for name in ("img_url", "sub_url")
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise WbiKeyError(f"nav answer without data.wbi_img ({error!r})") from None


def key_from_nav(payload: Mapping) -> str:
    """The mixin key of a ``nav`` answer."""
    return mixin_key(*keys_from_nav(payload))


def signed_query(params: Mapping[str, object], key: str, wts: int) -> str:
    """The query string with ``wts`` and ``w_rid`` for these parameters."""
    values = {str(k): str(v).translate(_DROP_FROM_VALUES) for k, v in params.items()}
    values["wts"] = str(wts)
    query = "&".join(
        f"{quote(k, safe=_URI_COMPONENT_SAFE)}={quote(v, safe=_URI_COMPONENT_SAFE)}"
        for k, v in sorted(values.items())
    )
    w_rid = hashlib.md5((query + key).encode("utf-8")).hexdigest()
    return f"{query}&w_rid={w_rid}"


def sign_url(url: str, key: str, wts: int) -> str:
    """``url`` signed afresh (any earlier ``wts``/``w_rid`` replaced)."""
    parts = urlsplit(url)
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if k not in ("wts", "w_rid")}
    return urlunsplit(parts._replace(query=signed_query(params, key, wts)))
