"""Settings of the Bilibili danmaku crawler: polite by default.

One request at a time per host, about one per second (``DOWNLOAD_DELAY`` plus
AutoThrottle, which only ever slows down from there), a browser-like
User-Agent and Referer, no login, bounded retries and back-offs. Override any
of them with ``-s NAME=value``; for a test against a local mock server the
tests use ``-s AUTOTHROTTLE_ENABLED=False -s DOWNLOAD_DELAY=0``.

danmaku's own settings (all optional):

- ``DANMAKU_DATABASE_URL``: the store (also the environment variable; default
  ``./danmaku.sqlite``), the same as ``danmaku import``'s ``--db``.
- ``BILIBILI_BASE_URL`` (env ``DANMAKU_BILIBILI_BASE_URL``): send every request to
  this origin instead (``danmaku.crawl.middlewares.base_url``).
- ``DANMAKU_REDIS_URL``, ``DANMAKU_REDIS_KEY``, ``DANMAKU_REDIS_IDLE_SECONDS`` (the first two also as
  environment variables): scrapy-redis mode (``danmaku.crawl.scaling``).
- ``DANMAKU_BACKOFF_*``, ``DANMAKU_BLOCKED_BACKOFF_BASE``: ``danmaku.crawl.middlewares.errors``.
- ``DANMAKU_WBI_KEY_MAX_AGE``: ``danmaku.crawl.middlewares.wbi``; ``DANMAKU_BUVID_REFRESH_AFTER``:
  ``danmaku.crawl.middlewares.device``.
- ``DANMAKU_BATCH_ROWS``, ``DANMAKU_FLUSH_SECONDS``: ``danmaku.crawl.pipelines``.

The optional ``SESSDATA`` login cookie is read from the environment only
(``DANMAKU_BILIBILI_SESSDATA``), never from settings, so it never lands in a log; it is
attached to a request only when it is sent, so it never lands in the JOBDIR or the
Redis queue either (``danmaku.crawl.middlewares.device``).
"""

import danmaku.bilibili as _bilibili

BOT_NAME = "danmaku"
SPIDER_MODULES = ["danmaku.crawl.spiders"]
NEWSPIDER_MODULE = "danmaku.crawl.spiders"
COMMANDS_MODULE = "danmaku.crawl.commands"  # `scrapy crawl` that checks -a arguments first

# The crawler reads JSON/protobuf API endpoints, not pages; politeness is the
# rate limit below, and users must respect Bilibili's terms (README).
ROBOTSTXT_OBEY = False

USER_AGENT = _bilibili.USER_AGENT  # shared with the live recorder
DEFAULT_REQUEST_HEADERS = {
    "Accept": "application/json, text/plain, */*",
    "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
    "Referer": "https://www.bilibili.com/",
    "Origin": "https://www.bilibili.com",
}
REFERRER_POLICY = "no-referrer"  # keep the fixed browser-like Referer above
# get_retry_request() (undecodable bodies) carries retry_times on purpose.
META_COPY_WARN_SKIP_KEYS = ["retry_times"]
COOKIES_ENABLED = False  # crawler.middlewares.device is the only cookie source

# -- Politeness ---------------------------------------------------------------------------
CONCURRENT_REQUESTS = 8
CONCURRENT_REQUESTS_PER_DOMAIN = 1
DOWNLOAD_DELAY = 1.0
DOWNLOAD_DELAY_JITTER = 0.5  # each delay is 0.5-1.5 x DOWNLOAD_DELAY
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
DOWNLOAD_TIMEOUT = 30
# Scrapy starts this many asyncio tasks per response to handle its output; ours
# yield one item or a few requests, and 100 (the default) costs more than parsing.
CONCURRENT_ITEMS = 8
RETRY_TIMES = 3
RETRY_HTTP_CODES: list[int] = []  # HTTP 408/412/429/5xx back off in the errors middleware
DANMAKU_BACKOFF_BASE = 10.0
DANMAKU_BLOCKED_BACKOFF_BASE = 60.0
DANMAKU_BACKOFF_MAX = 1800.0
DANMAKU_BACKOFF_JITTER = 0.25
DANMAKU_BACKOFF_RETRIES = 8

# -- Components ---------------------------------------------------------------------------
DOWNLOADER_MIDDLEWARES = {
    "danmaku.crawl.middlewares.base_url.BaseUrlMiddleware": 60,
    "danmaku.crawl.middlewares.wbi.WbiMiddleware": 70,
    "danmaku.crawl.middlewares.device.DeviceCookiesMiddleware": 80,
    # Sees responses after decompression (590) and before Scrapy's retries (550).
    "danmaku.crawl.middlewares.errors.BilibiliErrorsMiddleware": 560,
}
EXTENSIONS = {"danmaku.crawl.jobdir.PrivateJobDir": 0}  # JOBDIR readable by its owner only
ITEM_PIPELINES = {"danmaku.crawl.pipelines.StorePipeline": 300}
DANMAKU_BATCH_ROWS = 20_000
DANMAKU_FLUSH_SECONDS = 10.0

# No consoles into the process: they would expose the optional SESSDATA.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
LOG_LEVEL = "INFO"
