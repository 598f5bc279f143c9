"""The JOBDIR of a paused crawl is private: only its owner can look inside.

Scrapy writes the queued requests, the seen set and the spider's state there
with the default umask (files 0644, folders 0755). The requests carry no
credentials (``danmaku.crawl.middlewares.device`` strips them before they are
queued), but their URLs and meta say what a user crawls, on a machine others
may share. Making the folder itself ``0700`` covers every file Scrapy puts in
it, old or new, without changing the process's umask for the store or the log.
"""

from __future__ import annotations

import logging
import os

from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.utils.job import job_dir

logger = logging.getLogger(__name__)


class PrivateJobDir:
    """Extension: creates the JOBDIR (as Scrapy would) and makes it owner-only."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PrivateJobDir:
        path = job_dir(crawler.settings)
        if path is None:
            raise NotConfigured("no JOBDIR")
        try:
            os.chmod(path, 0o700)
        except OSError as error:  # e.g. a folder of another user: crawl on, and say so
            logger.warning("could not make JOBDIR %s private (%s)", path, error)
        return cls()
