"""One origin for every Bilibili request: ``DANMAKU_BILIBILI_BASE_URL``.

With it set, ``https://api.bilibili.com/x/v2/dm/web/seg.so?...`` goes to
``{base}/x/v2/dm/web/seg.so?...`` -- same path and query, whatever the Bilibili
host -- so one local server (``tests/support/mockbili``, ``tests/support/livemock``)
or a forwarding proxy can stand in for all of Bilibili. The crawler applies it in
``danmaku.crawl.middlewares.base_url``, the live recorder in ``danmaku.live.api``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

ENV_VAR = "DANMAKU_BILIBILI_BASE_URL"


def base_url_from_env() -> str | None:
    """The override, if the user (or a test) set one."""
    return os.environ.get(ENV_VAR) or None


def check_base_url(base: str) -> str:
    """``base`` itself if it is ``http(s)://host[:port][/path]``, else ValueError."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"BILIBILI_BASE_URL must be http(s)://host[:port][/path]: {base!r}")
    return base


def rebase_url(url: str, base: str) -> str:
    """``url`` with the scheme and host of ``base`` (and its path as a prefix); idempotent."""
    target = urlsplit(base)
    parts = urlsplit(url)
    prefix = target.path.rstrip("/")
    if (parts.scheme, parts.netloc) == (target.scheme, target.netloc) and (
        not prefix or parts.path == prefix or parts.path.startswith(prefix + "/")
    ):
        return url
    return urlunsplit((target.scheme, target.netloc, prefix + parts.path, parts.query, ""))
