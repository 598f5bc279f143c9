"""Downloader middlewares of the Bilibili crawler, one concern per module.

Request meta keys they share are defined here, so each is spelled once.
"""

INTERNAL = "danmaku_internal"
"""Set on requests a middleware sends itself (``nav``, ``finger/spi``); value: what for."""
WBI_KEY = "danmaku_wbi_key"
"""The mixin key a request was signed with; dropped to force a fresh signature."""
WBI_WTS = "danmaku_wbi_wts"
"""When (unix s) a request was signed."""
BACKOFF = "danmaku_backoff"
"""How many back-offs this request has been through."""
