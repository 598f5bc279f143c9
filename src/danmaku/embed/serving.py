"""What every route of ``danmaku embed serve`` shares: app keys, limits, errors, encoding a request.

Two error shapes exist because two client families do: bert-as-service's
routes answer ``{"error": "...", "status": N}``; OpenAI's (``/v1/...``)
answer ``{"error": {"message", "type", "param", "code"}}``, which the official
clients turn into typed exceptions. Handlers raise ``RequestError`` and the
middleware in ``service`` picks the shape by route.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from danmaku.embed.batching import Batcher
from danmaku.embed.encoder import Encoder
from danmaku.embed.metrics import ServiceMetrics


@dataclass(frozen=True)
class Limits:
    max_texts: int = 256
    max_text_chars: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class Access:
    """Who may call: ``api_key`` (None: anyone who can reach the port) and the served model name."""

    model_name: str = "danmaku"
    api_key: str | None = None


class RequestError(Exception):
    """A request the service refuses; ``reason`` labels ``danmaku_embed_rejected_total``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.reason = reason or {400: "bad_request", 401: "unauthorized", 404: "not_found",
                                 413: "too_large", 503: "overloaded"}.get(status, "other")


ENCODER: web.AppKey[Encoder] = web.AppKey("encoder", Encoder)
BATCHER: web.AppKey[Batcher] = web.AppKey("batcher", Batcher)
LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)
ACCESS: web.AppKey[Access] = web.AppKey("access", Access)
METRICS: web.AppKey[ServiceMetrics] = web.AppKey("metrics", ServiceMetrics)
INFO: web.AppKey[dict] = web.AppKey("info", dict)


async def read_json(request: web.Request) -> Any:
    body = await request.read()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"body is not JSON: {err}") from err


def check_texts(texts: Any, limits: Limits, name: str, *, tokenized: bool = False) -> list[Any]:
    """``texts`` as a non-empty list of non-empty strings (or word-piece lists), within limits."""
    if not isinstance(texts, list) or not texts:
        raise RequestError(400, f'"{name}" must be a non-empty list', param=name)
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}",
                           param=name)
    for i, text in enumerate(texts):
        if tokenized:
            if not (isinstance(text, list) and text and all(isinstance(t, str) and t for t in text)):
                raise RequestError(400, f"{name}[{i}] must be a non-empty list of non-empty strings",
                                   param=name)
        elif not isinstance(text, str) or not text.strip():
            raise RequestError(400, f"{name}[{i}] must be a non-empty string", param=name)
        if len(text) > limits.max_text_chars:
            raise RequestError(413, f"{name}[{i}] is {len(text)} long; the limit is {limits.max_text_chars}",
                               param=name)
    return texts


def client_gone(request: web.Request):
    """A check for the batcher: has this request's client disconnected?"""
    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return gone


async def encode(request: web.Request, texts: list[Any], *,
                 tokenized: bool = False) -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` through the shared batcher, and the tokens the model saw.

    Tokenizing happens off the event loop (a 4 MB body of long texts takes a while)
    and before queueing, so the queue bound is counted in tokens.
    """
    app = request.app
    encoder = app[ENCODER]
    prepare = encoder.ids_for_tokens if tokenized else encoder.ids_for_texts
    ids, truncated = await asyncio.get_running_loop().run_in_executor(None, prepare, texts)
    future = app[BATCHER].admit(ids, truncated, client_gone(request))
    app[METRICS].accepted()
    return await future, sum(len(x) for x in ids)
