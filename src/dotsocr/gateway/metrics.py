"""The gateway's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PAGE_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
TOKEN_BUCKETS = (100, 1_000, 5_000, 20_000, 100_000, 500_000, 2_000_000)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dotsocr_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.jobs = Counter("dotsocr_jobs", "Jobs entering each state", ["state"], registry=r)
        self.job_states = Gauge("dotsocr_jobs_current", "Jobs now in each state", ["state"],
                                registry=r)  # fmt: skip
        self.pages = Counter("dotsocr_pages", "Pages read, by status", ["status"], registry=r)
        self.page_seconds = Histogram(
            "dotsocr_page_seconds", "Seconds to read one page", buckets=PAGE_BUCKETS, registry=r
        )
        self.job_tokens = Histogram(
            "dotsocr_job_tokens", "Tokens per finished job", ["direction"],
            buckets=TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("dotsocr_queue_pages", "Pages waiting", registry=r)
        self.in_flight = Gauge("dotsocr_in_flight_pages", "Pages at the model server", registry=r)
        self.engine_errors = Counter(
            "dotsocr_engine_errors", "Pages the model server failed to answer", registry=r
        )
