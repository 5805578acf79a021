"""The service's Prometheus metrics, on a registry of its own (two apps in one process do not mix).

Throughput is counted (tokens, images); tokens/s and images/s are their ``rate()`` in Prometheus, and
the service also exports the rate over the last minute as gauges for a quick look without one.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # no *_created series: they double the output and carry nothing here
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_WINDOW_S = 60.0


class _Rate:
    """Events per second over the last minute."""

    def __init__(self) -> None:
        self._events: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, amount: float) -> None:
        with self._lock:
            self._events.append((time.monotonic(), amount))

    def value(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - RATE_WINDOW_S:
                self._events.popleft()
            return sum(a for _, a in self._events) / RATE_WINDOW_S


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("aigc_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("aigc_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("aigc_completion_tokens", "Tokens generated", ["model"], registry=r)
        self.prompt_tokens = Counter("aigc_prompt_tokens", "Prompt tokens read", ["model"], registry=r)
        self.images = Counter("aigc_images", "Images generated", ["model"], registry=r)
        self.ttft = Histogram("aigc_time_to_first_token_seconds", "Time from request to first streamed text",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Gauge("aigc_text_batch_rows", "Rows in a model's running text batch", ["model"],
                                registry=r)
        self._token_rate, self._image_rate = _Rate(), _Rate()
        Gauge("aigc_tokens_per_second", "Tokens generated per second over the last minute",
              registry=r).set_function(self._token_rate.value)
        Gauge("aigc_images_per_second", "Images generated per second over the last minute",
              registry=r).set_function(self._image_rate.value)
        self.queue = Gauge("aigc_job_queue_depth", "Jobs queued (all replicas, from the database)", registry=r)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.tokens.labels(model).inc(completion)
        self._token_rate.add(completion)

    def count_images(self, model: str, n: int) -> None:
        self.images.labels(model).inc(n)
        self._image_rate.add(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
