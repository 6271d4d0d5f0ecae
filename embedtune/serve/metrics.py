"""The service's Prometheus metrics: requests by endpoint and status, latency, batch sizes, index generations.

Each app gets its own ``CollectorRegistry`` (not prometheus-client's process-wide default), so
several apps in one process (tests, a notebook) neither collide on metric names nor mix their counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "embedtune_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "embedtune_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "embedtune_batch_texts", "Texts encoded per model run", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.queued = Histogram(
            "embedtune_queue_seconds",
            "Time a request waited for its batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generation = Gauge(
            "embedtune_index_generation", "Generation of each served index", ["index"], registry=self.registry
        )
        self.documents = Gauge(
            "embedtune_index_documents", "Documents in each served index", ["index"], registry=self.registry
        )

    def observe_batch(self, texts: int, waits: list[float]) -> None:
        self.batch_texts.observe(texts)
        for wait in waits:
            self.queued.observe(wait)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
