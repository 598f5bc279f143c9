"""Scrapy-free pieces of Bilibili's web API that the crawler and the live recorder share.

Reading order: ``base_url`` (send every request to one origin: a mock or a
proxy), ``wbi`` (request signing: mixin key, signed query, ``nav`` keys),
``device`` (the anonymous ``buvid3``/``buvid4`` cookies from ``finger/spi``, the
user's optional ``SESSDATA`` from the environment). The crawler's Scrapy
middlewares (``danmaku.crawl.middlewares``) and ``danmaku.live.api`` both call
these functions, so a change in Bilibili's rules is made once.
"""

API = "https://api.bilibili.com"
"""The main API host; ``nav`` and ``finger/spi`` live here for the crawler and the recorder."""
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
"""The browser-like User-Agent every client sends (Bilibili refuses obvious bots)."""
