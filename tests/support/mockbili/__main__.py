"""Run the mock on its own: ``python -m tests.support.mockbili [--port 8765] [--csv-tree DIR]``.

Then crawl it: ``DANMAKU_BILIBILI_BASE_URL=http://127.0.0.1:8765 scrapy crawl
bilibili_danmaku -a mid=349991143``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.support.mockbili import Catalog, MockBilibili


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--csv-tree", type=Path,
                        help="serve {mid}/{aid}.csv files (default: fixtures)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many videos")
    parser.add_argument("--space-page-size", type=int, default=30)
    args = parser.parse_args()
    catalog = (Catalog.from_csv_tree(args.csv_tree, args.limit) if args.csv_tree
               else Catalog.from_fixture())
    with MockBilibili(catalog, port=args.port, space_page_size=args.space_page_size) as mock:
        print(f"mock Bilibili with {len(catalog.videos)} videos at {mock.url} (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
