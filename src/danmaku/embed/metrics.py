"""What ``danmaku embed serve`` counts: Prometheus metrics (``GET /metrics``) and ``GET /status``'s load.

Each application gets its own ``CollectorRegistry`` (not the process-global
one), so several apps in one process -- tests, an embedding host -- do not
collide and each ``/metrics`` reports only its own service. Metric names start
with ``danmaku_embed_``:

* ``requests_total{route,status}`` and ``request_duration_seconds{route}`` per HTTP route;
* ``texts_total``, ``tokens_total`` (what the model encoded, ``[CLS]``/``[SEP]`` included),
  ``truncated_texts_total``;
* ``batches_total``, ``batch_texts``, ``batch_tokens``, ``batch_duration_seconds``
  (histograms per model call), ``queue_wait_seconds`` (arrival to batch);
* ``queue_tokens``, ``queue_texts`` (gauges, read when scraped), ``queue_peak_tokens``;
* ``rejected_total{reason}`` (overloaded, too_large, bad_request, unauthorized, ...),
  ``dropped_total`` (requests whose client left before the model reached them);
* ``model_info{model,pooling,layers,max_seq_len,dim}`` (always 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import Info as PromInfo

PREFIX = "danmaku_embed"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class Load:
    """The plain counters ``GET /status`` has always reported (bert-as-service-style JSON)."""

    started: float = field(default_factory=time.time)
    requests: int = 0
    texts: int = 0
    tokens: int = 0
    batches: int = 0
    rejected: int = 0
    overloaded: int = 0
    dropped: int = 0
    truncated: int = 0
    largest_batch: int = 0
    largest_batch_tokens: int = 0
    busy_s: float = 0.0  # time the model worker spent encoding

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out["uptime_s"] = round(time.time() - self.started, 1)
        out["busy_s"] = round(self.busy_s, 3)
        out["mean_batch_texts"] = round(self.texts / self.batches, 2) if self.batches else 0.0
        return out


class ServiceMetrics:
    """Prometheus instruments of one service, plus ``Load``; implements ``batching.BatchEvents``."""

    def __init__(self, info: dict[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.load = Load()
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered, by route and status.",
                                ["route", "status"], registry=r)
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds", "Time to answer a request, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.texts = Counter(f"{PREFIX}_texts", "Texts encoded by the model.", registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens encoded by the model ([CLS] and [SEP] included).",
                              registry=r)
        self.truncated = Counter(f"{PREFIX}_truncated_texts", "Texts cut to max_seq_len.", registry=r)
        self.batches = Counter(f"{PREFIX}_batches", "Model calls (batches).", registry=r)
        self.batch_texts = Histogram(f"{PREFIX}_batch_texts", "Texts per batch.", buckets=TEXT_BUCKETS,
                                     registry=r)
        self.batch_tokens = Histogram(f"{PREFIX}_batch_tokens", "Tokens per batch.", buckets=TOKEN_BUCKETS,
                                      registry=r)
        self.batch_seconds = Histogram(f"{PREFIX}_batch_duration_seconds", "Model time per batch.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(f"{PREFIX}_queue_wait_seconds", "Time from arrival to a batch.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_tokens = Gauge(f"{PREFIX}_queue_tokens", "Tokens waiting for the model.", registry=r)
        self.queue_texts = Gauge(f"{PREFIX}_queue_texts", "Texts waiting for the model.", registry=r)
        self.queue_peak = Gauge(f"{PREFIX}_queue_peak_tokens", "Most tokens ever waiting at once.",
                                registry=r)
        self.rejected = Counter(f"{PREFIX}_rejected", "Requests refused, by reason.", ["reason"], registry=r)
        self.dropped_jobs = Counter(f"{PREFIX}_dropped", "Requests dropped unencoded: their client left.",
                                    registry=r)
        PromInfo(f"{PREFIX}_model", "The model this service encodes with.", registry=r).info(info)

    def watch_queue(self, tokens: Callable[[], float], texts: Callable[[], float],
                    peak: Callable[[], float]) -> None:
        """Queue gauges read live from the batcher when scraped."""
        self.queue_tokens.set_function(tokens)
        self.queue_texts.set_function(texts)
        self.queue_peak.set_function(peak)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- HTTP -------------------------------------------------------------------
    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def refused(self, reason: str) -> None:
        self.rejected.labels(reason).inc()
        self.load.rejected += 1
        if reason == "overloaded":
            self.load.overloaded += 1

    def accepted(self) -> None:
        self.load.requests += 1

    # -- batching.BatchEvents -----------------------------------------------------
    def batch_done(self, texts: int, tokens: int, truncated: int, seconds: float) -> None:
        self.texts.inc(texts)
        self.tokens.inc(tokens)
        if truncated:
            self.truncated.inc(truncated)
        self.batches.inc()
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        load = self.load
        load.texts += texts
        load.tokens += tokens
        load.truncated += truncated
        load.batches += 1
        load.busy_s += seconds
        load.largest_batch = max(load.largest_batch, texts)
        load.largest_batch_tokens = max(load.largest_batch_tokens, tokens)

    def dropped(self, jobs: int) -> None:
        self.dropped_jobs.inc(jobs)
        self.load.dropped += jobs

    def waited(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)
