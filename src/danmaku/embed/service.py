"""``danmaku embed serve``: the aiohttp application -- bert-as-service's routes, OpenAI's, operations.

Routes:

* ``POST /encode`` ``{"id": 1, "texts": ["...", ...], "is_tokenized": false}`` ->
  ``{"id": 1, "result": [[...], ...]}`` (bert-as-service's shape); with
  ``is_tokenized`` each text is a list of word pieces (unknown ones become ``[UNK]``).
* ``POST /v1/embeddings``, ``GET /v1/models``: OpenAI's (``routes_openai``).
* ``POST /tokenize`` ``{"inputs": "..." | [...], "add_special_tokens": true}`` -> per
  input, the tokens the model sees (text-embeddings-inference's shape):
  ``[[{"id", "text", "special", "start", "stop"}, ...], ...]`` with ``start``/``stop``
  character offsets into the input (``null`` for ``[CLS]``/``[SEP]``), cut to ``max_seq_len``.
* ``GET /health``: 200 ``{"status": "ok"}`` while serving (the server listens only
  once the model is loaded and traced); 503 while shutting down.
* ``GET /info``: model, pooling, dimensions, limits, batching, whether a key is needed.
* ``GET /status``: ``/info``'s bert-as-service subset plus the load counters.
* ``GET /metrics``: Prometheus text format (``metrics``).

With an API key every route but ``/health`` needs ``Authorization: Bearer KEY``
(401 otherwise). Requests from concurrent clients share model calls
(``batching``): the queue is bounded in tokens, and beyond it a request gets 503
with ``Retry-After`` at once. Every failure is JSON: 400 malformed, 401, 404,
413 over a limit (body, texts, characters), 503 overloaded. The server binds
127.0.0.1 unless told otherwise and on SIGINT/SIGTERM stops accepting, finishes
the requests in flight, then returns.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from danmaku import __version__
from danmaku.embed import routes_openai
from danmaku.embed.batching import Batcher, BatchPolicy, ClientGone, Overloaded, TooLarge
from danmaku.embed.encoder import Encoder
from danmaku.embed.metrics import ServiceMetrics
from danmaku.embed.serving import (
    ACCESS,
    BATCHER,
    ENCODER,
    INFO,
    LIMITS,
    METRICS,
    Access,
    Limits,
    RequestError,
    check_texts,
    encode,
    read_json,
)

__all__ = ["BatchPolicy", "Limits", "is_loopback", "make_app", "parse_request", "serve"]

OPEN_ROUTES = ("/health",)
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (the CLI warns otherwise)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere, or "" / "0.0.0.0"-like wildcards


# -- errors, auth, metrics: one middleware ----------------------------------------
def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _error_response(request: web.Request, err: RequestError, headers: dict[str, str] | None = None
                    ) -> web.Response:
    if request.path.startswith("/v1/"):
        body = routes_openai.error_body(err)
    else:
        body = {"error": str(err), "status": err.status}
    return web.json_response(body, status=err.status, headers=headers)


def _authorized(request: web.Request) -> bool:
    key = request.app[ACCESS].api_key
    if key is None or request.path in OPEN_ROUTES:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


async def _answer(request: web.Request, handler: Callable) -> web.StreamResponse:
    metrics = request.app[METRICS]
    try:
        if not _authorized(request):
            raise RequestError(401, "a valid API key is needed: send the header 'Authorization: Bearer KEY'",
                               code="invalid_api_key")
        return await handler(request)
    except RequestError as err:
        metrics.refused(err.reason)
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return _error_response(request, err, headers)
    except Overloaded as err:
        metrics.refused("overloaded")
        return _error_response(request, RequestError(503, str(err)), {"Retry-After": str(err.retry_after)})
    except TooLarge as err:
        metrics.refused("too_large")
        return _error_response(request, RequestError(413, str(err)))
    except ClientGone as err:
        return _error_response(request, RequestError(499, str(err)))  # nginx's "client closed request"
    except web.HTTPException as err:
        if err.status < 400:
            raise
        message = err.reason
        if err.status == 413:
            message = f"request body larger than {request.app[LIMITS].max_body_bytes} bytes"
        error = RequestError(err.status, message)
        metrics.refused(error.reason if err.status != 405 else "method_not_allowed")
        return _error_response(request, error)
    except Exception as err:  # noqa: BLE001 -- the client gets JSON, the log gets the traceback
        request.app.logger.exception("request failed")
        return _error_response(request, RequestError(500, f"internal error: {type(err).__name__}: {err}"))


@web.middleware
async def _middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    started = time.perf_counter()
    response = await _answer(request, handler)
    request.app[METRICS].answered(_route(request), response.status, time.perf_counter() - started)
    return response


# -- bert-as-service's route ------------------------------------------------------
def parse_request(payload: Any, limits: Limits) -> tuple[Any, list[Any], bool]:
    """``(id, texts, is_tokenized)`` of a ``/encode`` body, or ``RequestError``."""
    if not isinstance(payload, dict):
        raise RequestError(400, 'body must be a JSON object {"id": ..., "texts": [...]}')
    tokenized = payload.get("is_tokenized", False)
    if not isinstance(tokenized, bool):
        raise RequestError(400, '"is_tokenized" must be true or false')
    texts = check_texts(payload.get("texts"), limits, "texts", tokenized=tokenized)
    return payload.get("id"), texts, tokenized


async def _encode(request: web.Request) -> web.Response:
    request.app[BATCHER].check_capacity()
    request_id, texts, tokenized = parse_request(await read_json(request), request.app[LIMITS])
    vectors, _ = await encode(request, texts, tokenized=tokenized)
    return web.json_response({"id": request_id, "result": vectors.tolist()})


# -- tokenize ---------------------------------------------------------------------
def tokenize_texts(encoder: Encoder, texts: list[str], add_special_tokens: bool = True) -> list[list[dict]]:
    """What the model sees of each text: word pieces, ids, offsets into the text; cut to max_seq_len."""
    tokenizer = encoder.tokenizer
    keep = encoder.settings.max_seq_len - 2
    out = []
    for text in texts:
        pieces = [{"id": p.id, "text": p.token, "special": False, "start": p.start,
                   "stop": p.stop} for p in tokenizer.pieces(text)[:keep]]
        if add_special_tokens:
            pieces = [_special(tokenizer, "[CLS]"), *pieces, _special(tokenizer, "[SEP]")]
        out.append(pieces)
    return out


def _special(tokenizer, token: str) -> dict:
    return {"id": tokenizer.vocab[token], "text": token, "special": True, "start": None, "stop": None}


async def _tokenize(request: web.Request) -> web.Response:
    payload = await read_json(request)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(400, 'body must be a JSON object {"inputs": "text" or ["text", ...]}')
    inputs = payload["inputs"]
    texts = check_texts([inputs] if isinstance(inputs, str) else inputs, request.app[LIMITS], "inputs")
    special = payload.get("add_special_tokens", True)
    if not isinstance(special, bool):
        raise RequestError(400, '"add_special_tokens" must be true or false')
    encoder = request.app[ENCODER]
    tokens = await asyncio.get_running_loop().run_in_executor(None, tokenize_texts, encoder, texts, special)
    return web.json_response(tokens)


# -- operations -------------------------------------------------------------------
async def _health(request: web.Request) -> web.Response:
    batcher = request.app.get(BATCHER)
    if batcher is None or not batcher.running:
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


async def _info(request: web.Request) -> web.Response:
    return web.json_response(request.app[INFO])


async def _status(request: web.Request) -> web.Response:
    app = request.app
    info = app[INFO]
    legacy = {k: info[k] for k in ("model", "pooling", "pooling_layer", "max_seq_len", "dim", "batch_size",
                                   "limits", "batching")}
    batcher = app[BATCHER]
    load = app[METRICS].load.as_dict() | {
        "queued_texts": batcher.queued_texts, "queued_tokens": batcher.queued_tokens,
        "peak_queued_tokens": batcher.peak_queued_tokens}
    return web.json_response({**legacy, "load": load})


async def _metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- assembly ---------------------------------------------------------------------
def make_app(
    encoder: Encoder,
    *,
    model: str = "danmaku",
    source: str = "",
    limits: Limits | None = None,
    policy: BatchPolicy | None = None,
    api_key: str | None = None,
) -> web.Application:
    """The aiohttp application; the batcher (and the model's warm-up) starts and stops with it.

    ``model`` is the name clients use (``/v1/embeddings``' ``model``), ``source``
    a description of what was loaded; ``api_key`` (non-empty) makes every route but
    ``/health`` require ``Authorization: Bearer KEY``.
    """
    if api_key is not None and not (api_key.strip() and api_key.isascii() and api_key.isprintable()
                                    and " " not in api_key):
        raise ValueError("the API key must be non-empty printable ASCII without spaces (it travels in the "
                         "HTTP header 'Authorization: Bearer KEY')")
    limits, policy = limits or Limits(), policy or BatchPolicy()
    s = encoder.settings
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[_middleware])
    app[ENCODER], app[LIMITS], app[ACCESS] = encoder, limits, Access(model_name=model, api_key=api_key)
    app[INFO] = {
        "model": model,
        "source": source,
        "version": __version__,
        "pooling": s.pooling.value,
        "pooling_layer": list(s.layers),
        "max_seq_len": s.max_seq_len,
        "dim": encoder.dim,
        "batch_size": s.batch_size,
        "limits": asdict(limits),
        "batching": asdict(policy),
        "auth": api_key is not None,
        "routes": ["POST /encode", "POST /v1/embeddings", "GET /v1/models", "POST /tokenize", "GET /health",
                   "GET /info", "GET /status", "GET /metrics"],
    }
    metrics = ServiceMetrics({"model": model, "pooling": s.pooling.value,
                              "layers": ",".join(map(str, s.layers)), "max_seq_len": str(s.max_seq_len),
                              "dim": str(encoder.dim)})
    app[METRICS] = metrics

    async def start(app: web.Application) -> None:
        batcher = Batcher(encoder, policy, metrics)
        metrics.watch_queue(lambda: batcher.queued_tokens, lambda: batcher.queued_texts,
                            lambda: batcher.peak_queued_tokens)
        await batcher.start()
        app[BATCHER] = batcher

    async def stop(app: web.Application) -> None:
        if BATCHER in app:
            await app[BATCHER].stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/encode", _encode)
    routes_openai.add_routes(app)
    app.router.add_post("/tokenize", _tokenize)
    app.router.add_get("/health", _health)
    app.router.add_get("/info", _info)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    return app


async def serve(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 8125,
    *,
    on_ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 30.0,
) -> None:
    """Serve until SIGINT/SIGTERM, then drain requests in flight and return."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if on_ready is not None:
            on_ready(f"http://{bound_host}:{bound_port}")
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
