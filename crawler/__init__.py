"""Bilibili video-danmaku crawler (a Scrapy project; settings in ``crawler.settings``)."""
