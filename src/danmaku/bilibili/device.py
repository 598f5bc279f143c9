"""Device cookies and the user's optional login, for every client of Bilibili's API.

Since 2024-2025 Bilibili answers ``-352`` to listings, danmaku and
``getDanmuInfo`` requests that lack the ``buvid3``/``buvid4`` cookies. They come
from ``finger/spi`` (no login). ``SESSDATA`` is a logged-in session: read only
from ``DANMAKU_BILIBILI_SESSDATA``, never put in settings, logs, items, exports
or the store. Used by the crawler's ``DeviceCookiesMiddleware`` and by
``danmaku.live.api``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from danmaku.bilibili import API

SESSDATA_ENV = "DANMAKU_BILIBILI_SESSDATA"


class DeviceCookieError(ValueError):
    """``finger/spi`` did not answer with ``data.b_3`` and ``data.b_4``."""


def finger_url() -> str:
    """Anonymous device ids ``data.b_3`` / ``data.b_4`` -> cookies ``buvid3`` / ``buvid4``."""
    return f"{API}/x/frontend/finger/spi"


def sessdata_from_env() -> str | None:
    """The user's SESSDATA, if they chose to give one (never logged)."""
    value = os.environ.get(SESSDATA_ENV, "").strip()
    return value or None


def cookies_from_finger(payload: object) -> dict[str, str]:
    """``{"buvid3": ..., "buvid4": ...}`` from a ``finger/spi`` answer."""
    try:
        data = payload["data"]  # type: ignore[index]
        return {"buvid3": str(data["b_3"]), "buvid4": str(data["b_4"])}
    except (KeyError, TypeError) as error:
        raise DeviceCookieError(f"finger/spi answer without data.b_3/b_4 ({error!r})") from None


def cookie_header(cookies: Mapping[str, str]) -> str:
    """The ``Cookie`` header value for these cookies (empty when there are none)."""
    return "; ".join(f"{k}={v}" for k, v in cookies.items())
