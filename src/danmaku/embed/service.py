"""``danmaku embed serve``: bert-as-service's HTTP interface on aiohttp, with dynamic batching.

Endpoints (bert-as-service's HTTP shape):

* ``POST /encode`` ``{"id": 1, "texts": ["...", ...], "is_tokenized": false}`` ->
  ``{"id": 1, "result": [[...], ...]}``; with ``is_tokenized`` each text is a
  list of word pieces (unknown ones become ``[UNK]``).
* ``GET /status`` -> model, pooling, layers, limits and load counters.

Requests from concurrent clients are merged: a single worker thread runs the
model; while it works, requests queue; the batcher then takes everything
waiting (up to ``max_batch_texts``), waiting at most ``max_wait_ms`` after the
first request for company. Results are split back per request, in order.

Limits, each answered with a JSON ``{"error": ...}``: body larger than
``max_body_bytes`` -> 413; more than ``max_texts`` texts -> 413; a text longer
than ``max_text_chars`` characters (or tokens) -> 413; malformed JSON, a wrong
type or an empty text -> 400 (bert-as-service refused empty strings too).
The server binds 127.0.0.1 unless told otherwise and shuts down gracefully
on SIGINT/SIGTERM: it stops accepting, finishes requests in flight, then exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from danmaku.embed.encoder import Encoder


@dataclass(frozen=True)
class Limits:
    max_texts: int = 256
    max_text_chars: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_texts: int = 256
    max_wait_ms: float = 5.0


@dataclass
class Load:
    started: float = field(default_factory=time.time)
    requests: int = 0
    texts: int = 0
    batches: int = 0
    rejected: int = 0
    truncated: int = 0
    queued_texts: int = 0
    largest_batch: int = 0
    busy_s: float = 0.0  # time the model worker spent encoding

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out["uptime_s"] = round(time.time() - self.started, 1)
        out["busy_s"] = round(self.busy_s, 3)
        out["mean_batch_texts"] = round(self.texts / self.batches, 2) if self.batches else 0.0
        return out


@dataclass
class _Job:
    items: list[Any]
    tokenized: bool
    future: asyncio.Future


class Batcher:
    """Merges queued jobs into one model call on a single worker thread."""

    def __init__(self, encoder: Encoder, policy: BatchPolicy, load: Load) -> None:
        self.encoder = encoder
        self.policy = policy
        self.load = load
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="danmaku-embed")
        self._task: asyncio.Task | None = None
        self._arrived = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="danmaku-embed-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._queue.put_nowait(None)
            self._arrived.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, items: list[Any], tokenized: bool) -> np.ndarray:
        job = _Job(items, tokenized, asyncio.get_running_loop().create_future())
        self.load.queued_texts += len(items)
        self._queue.put_nowait(job)
        self._arrived.set()
        return await job.future

    def _encode(self, jobs: list[_Job]) -> list[np.ndarray]:
        started = time.perf_counter()
        ids: list[list[int]] = []
        for job in jobs:
            prepare = self.encoder.ids_for_tokens if job.tokenized else self.encoder.ids_for_texts
            framed, cut = prepare(job.items)
            ids += framed
            self.load.truncated += cut
        vectors = self.encoder.encode_ids(ids)
        bounds = np.cumsum([len(j.items) for j in jobs])[:-1]
        self.load.busy_s += time.perf_counter() - started
        return np.split(vectors, bounds)

    async def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever arrives within the wait bound; True once told to stop."""
        loop = asyncio.get_running_loop()
        jobs, count = [first], len(first.items)
        deadline = loop.time() + self.policy.max_wait_ms / 1000
        while count < self.policy.max_batch_texts:
            self._arrived.clear()
            while not self._queue.empty() and count < self.policy.max_batch_texts:
                job = self._queue.get_nowait()
                if job is None:
                    return jobs, True
                jobs.append(job)
                count += len(job.items)
            remaining = deadline - loop.time()
            if count >= self.policy.max_batch_texts or remaining <= 0:
                break
            try:  # waiting on an event (not on queue.get) cannot lose a job when it times out
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                if self._queue.empty():
                    break
        return jobs, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            jobs, stopping = await self._gather(first)
            texts = sum(len(j.items) for j in jobs)
            try:
                results = await loop.run_in_executor(self._executor, self._encode, jobs)
            except Exception as err:  # noqa: BLE001 -- every waiting client must hear about it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
            else:
                for job, vectors in zip(jobs, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(vectors)
            finally:
                self.load.queued_texts -= texts
            self.load.batches += 1
            self.load.texts += texts
            self.load.largest_batch = max(self.load.largest_batch, texts)


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every failure as JSON, aiohttp's own (404, 405, 413 body too large) included."""
    try:
        return await handler(request)
    except RequestError as err:
        request.app[LOAD].rejected += 1
        return _error(err.status, str(err))
    except web.HTTPException as err:
        if err.status >= 400:
            request.app[LOAD].rejected += 1
            return _error(err.status, err.reason if err.status != 413 else (
                f"request body larger than {request.app[LIMITS].max_body_bytes} bytes"))
        raise
    except Exception as err:  # noqa: BLE001 -- the client gets JSON, the log gets the traceback
        request.app.logger.exception("encoding failed")
        return _error(500, f"internal error: {type(err).__name__}: {err}")


def parse_request(body: bytes, limits: Limits) -> tuple[Any, list[Any], bool]:
    """``(id, texts, is_tokenized)`` of a ``/encode`` body, or ``RequestError``."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"body is not JSON: {err}") from err
    if not isinstance(payload, dict):
        raise RequestError(400, 'body must be a JSON object {"id": ..., "texts": [...]}')
    texts = payload.get("texts")
    tokenized = payload.get("is_tokenized", False)
    if not isinstance(tokenized, bool):
        raise RequestError(400, '"is_tokenized" must be true or false')
    if not isinstance(texts, list) or not texts:
        raise RequestError(400, '"texts" must be a non-empty list')
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    for i, text in enumerate(texts):
        if tokenized:
            ok = isinstance(text, list) and text and all(isinstance(t, str) and t for t in text)
            if not ok:
                raise RequestError(400, f"texts[{i}] must be a non-empty list of non-empty strings")
        elif not isinstance(text, str) or not text.strip():
            raise RequestError(400, f"texts[{i}] must be a non-empty string")
        if len(text) > limits.max_text_chars:
            raise RequestError(413, f"texts[{i}] is {len(text)} long; the limit is {limits.max_text_chars}")
    return payload.get("id"), texts, tokenized


ENCODER: web.AppKey[Encoder] = web.AppKey("encoder", Encoder)
BATCHER: web.AppKey[Batcher] = web.AppKey("batcher", Batcher)
LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)
LOAD: web.AppKey[Load] = web.AppKey("load", Load)
INFO: web.AppKey[dict] = web.AppKey("info", dict)


async def _encode(request: web.Request) -> web.Response:
    app = request.app
    body = await request.read()
    request_id, texts, tokenized = parse_request(body, app[LIMITS])
    app[LOAD].requests += 1
    vectors = await app[BATCHER].submit(texts, tokenized)
    return web.json_response({"id": request_id, "result": vectors.tolist()})


async def _status(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({**app[INFO], "load": app[LOAD].as_dict()})


def make_app(
    encoder: Encoder,
    *,
    model: str = "",
    limits: Limits | None = None,
    policy: BatchPolicy | None = None,
) -> web.Application:
    """The aiohttp application (the batcher starts and stops with it)."""
    limits, policy = limits or Limits(), policy or BatchPolicy()
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[_json_errors])
    app[ENCODER], app[LIMITS], app[LOAD] = encoder, limits, Load()
    s = encoder.settings
    app[INFO] = {
        "model": model,
        "pooling": s.pooling.value,
        "pooling_layer": list(s.layers),
        "max_seq_len": s.max_seq_len,
        "dim": encoder.dim,
        "batch_size": s.batch_size,
        "limits": asdict(limits),
        "batching": asdict(policy),
    }

    async def start(app: web.Application) -> None:
        app[BATCHER] = Batcher(encoder, policy, app[LOAD])
        app[BATCHER].start()

    async def stop(app: web.Application) -> None:
        await app[BATCHER].stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/encode", _encode)
    app.router.add_get("/status", _status)
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
