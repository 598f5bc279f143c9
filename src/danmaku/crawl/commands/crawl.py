"""``scrapy crawl``, checking the Bilibili spider's ``-a`` arguments before anything starts.

A bad id or list file is a usage error -- one line naming the entry, exit code
2 -- instead of a traceback from inside the crawler's start-up.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError

from danmaku.crawl.spiders.bilibili_danmaku import ARGUMENTS, BilibiliDanmakuSpider, read_arguments
from danmaku.crawl.targets import TargetError


class Command(ScrapyCrawlCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args and args[0] == BilibiliDanmakuSpider.name:
            unknown = sorted(set(opts.spargs) - set(ARGUMENTS))
            if unknown:
                raise UsageError(f"unknown argument(s) -a {', '.join(unknown)}; "
                                 f"known: {', '.join(ARGUMENTS)}", print_help=False)
            try:
                read_arguments(**opts.spargs)
            except TargetError as error:
                raise UsageError(str(error), print_help=False) from None
        super().run(args, opts)
