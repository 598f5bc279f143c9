"""Downloader middlewares of the Bilibili crawler, one concern per module.

Request meta keys they share are defined here, so each is spelled once.
"""

INTERNAL = "dd_internal"
"""Set on requests a middleware sends itself (``nav``, ``finger/spi``); value: what for."""
WBI_KEY = "dd_wbi_key"
"""The mixin key a request was signed with; dropped to force a fresh signature."""
WBI_WTS = "dd_wbi_wts"
"""When (unix s) a request was signed."""
BACKOFF = "dd_backoff"
"""How many back-offs this request has been through."""
