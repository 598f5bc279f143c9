"""Bilibili's danmaku messages: ``dm.proto`` and the module protoc generated from it."""
