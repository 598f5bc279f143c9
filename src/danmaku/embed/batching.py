"""Dynamic batching for ``danmaku embed serve``: one model worker, a bounded queue, FIFO batches.

Requests arrive already tokenized (framed ``[CLS] .. [SEP]`` id lists), so the
queue knows what each one costs in tokens -- the unit the model's time and
memory grow with, unlike a text count (one 32-token text costs as much as eight
4-token ones). Policy:

* a batch takes waiting jobs in arrival order while it stays within
  ``max_batch_texts`` texts and ``max_batch_tokens`` tokens (a job larger than
  the token bound runs alone), waiting at most ``max_wait_ms`` after the first
  for company; a job that does not fit waits at the head for the next batch;
* at most ``max_queued_tokens`` tokens wait for the model: a job that would
  exceed it is refused at once with ``Overloaded`` (the HTTP layer answers 503
  with ``Retry-After``) instead of joining a queue that grows until memory or
  latency breaks; a job larger than the whole bound is ``TooLarge`` (retrying
  cannot help);
* a job whose client has gone (its ``gone()`` says so, or its future was
  cancelled) is dropped when the batcher reaches it, again just before the
  model call, and whenever the queue looks full: it is never encoded, takes no
  place in a batch and holds no queue capacity.

``None`` for a bound switches it off (``max_batch_tokens=None`` is the text-count
batching the service had before; the benchmark compares the two).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from danmaku.embed.encoder import Encoder


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_texts: int = 256
    max_batch_tokens: int | None = 2048  # 64 texts x 32 tokens: one full model call at the defaults
    max_wait_ms: float = 5.0
    max_queued_tokens: int | None = 65_536

    def __post_init__(self) -> None:
        for name in ("max_batch_texts", "max_batch_tokens", "max_queued_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive (or None for no bound), got {value}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


class Overloaded(Exception):
    """The queue is full; ``retry_after`` is an estimate in whole seconds of when it drains."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def full(cls, queued_tokens: int, limit: int, retry_after: int) -> Overloaded:
        return cls(f"the service is overloaded: {queued_tokens} tokens are waiting for the model (the limit "
                   f"is {limit}); retry after {retry_after} s", retry_after)


class TooLarge(Exception):
    """A request larger than the whole queue bound: it could never be admitted."""


class ClientGone(Exception):
    """The client disconnected before its texts reached the model (they were not encoded)."""


class BatchEvents(Protocol):
    """What the batcher reports (``metrics.ServiceMetrics`` implements it)."""

    def batch_done(self, texts: int, tokens: int, truncated: int, seconds: float) -> None: ...

    def dropped(self, jobs: int) -> None: ...

    def waited(self, seconds: float) -> None: ...


@dataclass(eq=False)
class Job:
    ids: list[list[int]]
    truncated: int
    gone: Callable[[], bool]
    future: asyncio.Future
    tokens: int = 0
    enqueued: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.tokens = sum(len(x) for x in self.ids)

    @property
    def texts(self) -> int:
        return len(self.ids)

    def abandoned(self) -> bool:
        return self.future.done() or self.gone()


class Batcher:
    """Merges queued jobs into model calls on a single worker thread."""

    def __init__(self, encoder: Encoder, policy: BatchPolicy, events: BatchEvents) -> None:
        self.encoder = encoder
        self.policy = policy
        self.events = events
        self._queue: deque[Job] = deque()
        self.queued_tokens = 0
        self.queued_texts = 0
        self.peak_queued_tokens = 0
        self._arrived = asyncio.Event()
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="danmaku-embed")
        self._task: asyncio.Task | None = None
        self._tokens_per_s = 0.0  # recent model throughput, for Retry-After

    # -- lifecycle --------------------------------------------------------------
    async def start(self, warm_up: Sequence[str] = ("阿夸",)) -> None:
        """Trace the model once (so the first client does not pay for it), then start batching."""
        if warm_up:
            ids, _ = self.encoder.ids_for_texts(list(warm_up))
            await asyncio.get_running_loop().run_in_executor(self._executor, self.encoder.encode_ids, ids)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="danmaku-embed-batcher")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._stopping = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    # -- admission --------------------------------------------------------------
    def check_capacity(self) -> None:
        """``Overloaded`` when the queue is already full (before a request body is even read)."""
        limit = self.policy.max_queued_tokens
        if limit is not None and self.queued_tokens >= limit and self._sweep() >= limit:
            raise Overloaded.full(self.queued_tokens, limit, self.retry_after())

    def retry_after(self) -> int:
        """Seconds until the queue has drained at the recent model speed (1..60)."""
        if self._tokens_per_s <= 0:
            return 1
        return max(1, min(60, math.ceil(self.queued_tokens / self._tokens_per_s)))

    def admit(self, ids: list[list[int]], truncated: int = 0,
              gone: Callable[[], bool] = lambda: False) -> asyncio.Future:
        """Queue framed id lists; the future gets their vectors once a batch has run them.

        Raises ``Overloaded`` or ``TooLarge`` at once instead of queueing. Cancelling the
        future (a handler cancelled when its client left) makes the batcher drop the job.
        """
        if self._stopping:
            raise Overloaded("the service is shutting down", 1)
        job = Job(ids, truncated, gone, asyncio.get_running_loop().create_future())
        limit = self.policy.max_queued_tokens
        if limit is not None:
            if job.tokens > limit:
                raise TooLarge(f"the request has {job.tokens} tokens; the service queues at most {limit}")
            if self.queued_tokens + job.tokens > limit and self._sweep() + job.tokens > limit:
                raise Overloaded.full(self.queued_tokens, limit, self.retry_after())
        self._queue.append(job)
        self._count(job, +1)
        self._arrived.set()
        return job.future

    async def submit(self, ids: list[list[int]], truncated: int = 0,
                     gone: Callable[[], bool] = lambda: False) -> np.ndarray:
        """``admit`` and wait for the vectors."""
        return await self.admit(ids, truncated, gone)

    def _sweep(self) -> int:
        """Drop every abandoned job now (not only at the queue head); the tokens still queued.

        Runs only when the queue looks full, so that clients who left do not hold
        capacity that others are refused for."""
        kept: deque[Job] = deque()
        for job in self._queue:
            if job.abandoned():
                self._count(job, -1)
                self._drop(job)
            else:
                kept.append(job)
        self._queue = kept
        return self.queued_tokens

    def _count(self, job: Job, sign: int) -> None:
        self.queued_tokens += sign * job.tokens
        self.queued_texts += sign * job.texts
        self.peak_queued_tokens = max(self.peak_queued_tokens, self.queued_tokens)

    # -- the worker -------------------------------------------------------------
    def _drop(self, job: Job) -> None:
        if not job.future.done():  # an exception, not cancel(): the handler's task itself was not cancelled
            job.future.set_exception(ClientGone("the client disconnected; its texts were not encoded"))
        self.events.dropped(1)

    def _take(self, batch: list[Job], texts: int, tokens: int) -> tuple[int, int, bool]:
        """Move fitting jobs from the queue head into ``batch``; True when the batch is full."""
        policy = self.policy
        while self._queue:
            job = self._queue[0]
            if job.abandoned():
                self._queue.popleft()
                self._count(job, -1)
                self._drop(job)
                continue
            too_many = texts + job.texts > policy.max_batch_texts
            too_long = policy.max_batch_tokens is not None and tokens + job.tokens > policy.max_batch_tokens
            if batch and (too_many or too_long):
                return texts, tokens, True
            self._queue.popleft()
            self._count(job, -1)
            self.events.waited(time.perf_counter() - job.enqueued)
            batch.append(job)
            texts, tokens = texts + job.texts, tokens + job.tokens
        return texts, tokens, False

    async def _gather(self) -> list[Job]:
        """Jobs for one model call: the queue head plus whatever fits within the wait bound."""
        loop = asyncio.get_running_loop()
        batch: list[Job] = []
        texts = tokens = 0
        deadline = None
        while True:
            self._arrived.clear()
            texts, tokens, full = self._take(batch, texts, tokens)
            if batch and deadline is None:
                deadline = loop.time() + self.policy.max_wait_ms / 1000
            if full or self._stopping or (batch and loop.time() >= deadline):
                break
            if not batch:  # everything taken so far was abandoned: wait for real work
                await self._arrived.wait()
                continue
            try:  # waiting on an event (not on a queue get) cannot lose a job on time-out
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
            except TimeoutError:
                pass
        kept = []
        for job in batch:  # a client may have left while the batch was filling
            if job.abandoned():
                self._drop(job)
            else:
                kept.append(job)
        return kept

    def _encode(self, batch: list[Job]) -> tuple[list[np.ndarray], float]:
        started = time.perf_counter()
        ids = [x for job in batch for x in job.ids]
        vectors = self.encoder.encode_ids(ids)
        bounds = np.cumsum([job.texts for job in batch])[:-1]
        return np.split(vectors, bounds), time.perf_counter() - started

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._stopping:
                    break
                await self._arrived.wait()
                self._arrived.clear()
                continue
            batch = await self._gather()
            if not batch:
                continue
            try:
                results, seconds = await loop.run_in_executor(self._executor, self._encode, batch)
            except Exception as err:  # noqa: BLE001 -- every waiting client must hear about it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            for job, vectors in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(vectors)
            tokens = sum(job.tokens for job in batch)
            rate = tokens / seconds if seconds > 0 else 0.0
            self._tokens_per_s = rate if self._tokens_per_s == 0 else 0.8 * self._tokens_per_s + 0.2 * rate
            self.events.batch_done(sum(job.texts for job in batch), tokens,
                                   sum(job.truncated for job in batch), seconds)
