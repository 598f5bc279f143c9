"""Bilibili video-danmaku crawler (a Scrapy project; settings in ``danmaku.crawl.settings``)."""
