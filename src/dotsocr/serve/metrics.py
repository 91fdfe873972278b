"""Reading vLLM's Prometheus /metrics: snapshots, rates between two of them, and a hang watch.

vLLM exposes counters and histograms that only grow, so what a person watching wants
(tokens per second, latency percentiles over the last few seconds) is the difference
between two readings. Names follow vLLM's V1 engine and fall back to the V0-era ones.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from dotsocr.engines.openai import normalise_url
from dotsocr.errors import EngineUnavailable

PREFIX = "vllm:"
STARTED = "process_start_time_seconds"  # prometheus_client's, absent in multiprocess mode
# Histograms kept, by their name without the prefix.
HISTOGRAMS = (
    "time_to_first_token_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "request_prompt_tokens",
    "request_generation_tokens",
)
QUANTILES = (0.5, 0.9, 0.99)


def fetch(url: str, *, timeout: float = 5.0, client: httpx.Client | None = None) -> str:
    """GET ``{url}/metrics`` and return its text.

    Args:
        url: the server's base URL, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine).
        timeout: seconds to connect, and for each read.
        client: a client to reuse between calls (the monitor keeps one connection open).

    Raises:
        EngineUnavailable: the server cannot be reached or does not serve /metrics.
        ConfigError: the URL is malformed.
    """
    target = f"{normalise_url(url)}/metrics"
    try:
        if client is None:
            response = httpx.get(target, timeout=timeout)
        else:
            response = client.get(target, timeout=timeout)
    except httpx.TimeoutException:
        raise EngineUnavailable(f"{target} gave no answer within {timeout:g} s") from None
    except httpx.ConnectError:
        raise EngineUnavailable(
            f"cannot connect to {target}: is the server running? (start one with 'dotsocr serve')"
        ) from None
    except httpx.HTTPError as exc:
        raise EngineUnavailable(f"{target}: {exc or type(exc).__name__}") from None
    if response.status_code != 200:
        raise EngineUnavailable(
            f"{target} answered HTTP {response.status_code}: is this a vLLM server?"
        )
    return response.text


@dataclass(frozen=True)
class Histogram:
    """One histogram summed over its label sets: cumulative (le, count) buckets, +Inf last."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def since(self, earlier: Histogram | None) -> Histogram:
        """The observations made after ``earlier``; all of these if the server restarted."""
        if earlier is None or _was_reset(earlier, self):
            return self
        before = dict(earlier.buckets)
        buckets = tuple((le, count - before.get(le, 0.0)) for le, count in self.buckets)
        return Histogram(buckets, self.sum - earlier.sum, self.count - earlier.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear inside the bucket; None without observations.

        A rank that falls in the +Inf bucket gives the highest finite bound, as Prometheus does.
        """
        if len(self.buckets) < 2 or not math.isinf(self.buckets[-1][0]):
            return None
        bounds = [le for le, _ in self.buckets]
        counts = list(_monotonic(c for _, c in self.buckets))
        total = counts[-1]
        if total <= 0:
            return None
        rank = q * total
        index = next(i for i, c in enumerate(counts) if c >= rank)
        if index == len(bounds) - 1:
            return bounds[-2]
        upper = bounds[index]
        lower = bounds[index - 1] if index else 0.0
        below = counts[index - 1] if index else 0.0
        if index == 0 and upper <= 0:
            return upper
        inside = counts[index] - below
        return lower + (upper - lower) * (rank - below) / inside if inside else upper


def _monotonic(values: Iterable[float]) -> Iterator[float]:
    """Cumulative counts never fall; float noise in deltas can make them, so clamp."""
    highest = 0.0
    for value in values:
        highest = max(highest, value)
        yield highest


def _was_reset(earlier: Histogram, later: Histogram) -> bool:
    """Counts went down, or the bucket bounds changed: a new server process."""
    before = dict(earlier.buckets)
    return (
        later.count < earlier.count
        or before.keys() != dict(later.buckets).keys()
        or any(count < before.get(le, 0.0) for le, count in later.buckets)
    )


@dataclass(frozen=True)
class Snapshot:
    """One reading of /metrics at monotonic time ``at``; a metric the server lacks is None."""

    at: float
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    requests_finished: float | None = None
    preemptions: float | None = None
    histograms: dict[str, Histogram] = field(default_factory=dict)
    started: float | None = None  # the server process' start, epoch seconds, if it says


def parse(text: str, at: float) -> Snapshot:
    """Read vLLM's Prometheus text into a Snapshot, summing over label sets (engines, models);
    KV cache use, a fraction of each engine's own cache, is averaged instead.

    Samples are looked up by their exposed names, so a counter is found whether the
    parser files it under ``x`` (TYPE counter, ``_total`` dropped) or ``x_total`` (untyped).
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = defaultdict(float)
    series: dict[str, int] = defaultdict(int)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == STARTED:
                    values[STARTED] = sample.value
                if not sample.name.startswith(PREFIX) or math.isnan(sample.value):
                    continue
                if sample.name.endswith("_bucket") and "le" in sample.labels:
                    le = float(sample.labels["le"])
                    buckets[sample.name.removesuffix("_bucket")][le] += sample.value
                else:
                    values[sample.name] += sample.value
                    series[sample.name] += 1
    except ValueError as exc:
        detail = (str(exc).splitlines() or [""])[0][:120]
        raise EngineUnavailable(
            f"unreadable /metrics text ({detail}): is this a vLLM server?"
        ) from None

    def first(*names: str) -> float | None:
        return next((values[PREFIX + n] for n in names if PREFIX + n in values), None)

    def mean(*names: str) -> float | None:
        """A fraction per engine (KV cache use): the engines' mean, not their sum."""
        name = next((PREFIX + n for n in names if PREFIX + n in values), None)
        return values[name] / series[name] if name else None

    def counter(*names: str) -> float | None:
        return first(*(f"{n}_total" for n in names), *names)

    histograms = {}
    for name in HISTOGRAMS:
        found = buckets.get(PREFIX + name)
        if found:
            histograms[name] = Histogram(
                tuple(sorted(found.items())),
                values.get(f"{PREFIX}{name}_sum", 0.0),
                values.get(f"{PREFIX}{name}_count", max(found.values())),
            )
    return Snapshot(
        at=at,
        running=first("num_requests_running"),
        waiting=first("num_requests_waiting"),
        kv_cache_usage=mean("kv_cache_usage_perc", "gpu_cache_usage_perc"),
        prompt_tokens=counter("prompt_tokens"),
        generation_tokens=counter("generation_tokens"),
        requests_finished=counter("request_success"),
        # V0 named it num_preemptions_total, which a client exposes as _total as well.
        preemptions=counter("num_preemptions", "num_preemptions_total"),
        histograms=histograms,
        started=values.get(STARTED),
    )


def _increase(before: float | None, after: float | None) -> float | None:
    """A counter's growth; after a restart (it went down) the new value is all growth."""
    if after is None:
        return None
    if before is None or after < before:
        return after
    return after - before


@dataclass(frozen=True)
class Quantiles:
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, histogram: Histogram | None) -> Quantiles:
        if histogram is None:
            return cls()
        return cls(*(histogram.quantile(q) for q in QUANTILES))


@dataclass(frozen=True)
class Rates:
    """What changed between two snapshots; with no earlier one, totals since the server began."""

    seconds: float | None = None  # the window; None when cumulative
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    pages_per_s: float | None = None
    preemptions: float | None = None
    ttft: Quantiles = field(default_factory=Quantiles)
    e2e: Quantiles = field(default_factory=Quantiles)

    @classmethod
    def between(cls, previous: Snapshot | None, current: Snapshot) -> Rates:
        """Rates over the window, and latency percentiles of the requests finished in it."""
        seconds = current.at - previous.at if previous is not None else None
        window = previous is not None and seconds is not None and seconds > 0

        def per_second(name: str) -> float | None:
            grown = _increase(getattr(previous, name, None), getattr(current, name))
            return grown / seconds if window and grown is not None and seconds else None

        def quantiles(name: str) -> Quantiles:
            histogram = current.histograms.get(name)
            earlier = previous.histograms.get(name) if previous is not None else None
            return Quantiles.of(histogram.since(earlier) if histogram else None)

        return cls(
            seconds=seconds if window else None,
            prompt_tokens_per_s=per_second("prompt_tokens"),
            generation_tokens_per_s=per_second("generation_tokens"),
            pages_per_s=per_second("requests_finished"),
            preemptions=_increase(getattr(previous, "preemptions", None), current.preemptions),
            ttft=quantiles("time_to_first_token_seconds"),
            e2e=quantiles("e2e_request_latency_seconds"),
        )


class HangWatch:
    """Warns when requests run but no token comes out: at tensor-parallel 1 a stuck step
    keeps /health at 200, so the generation counter is the only sign."""

    def __init__(self, stall_seconds: float = 60.0) -> None:
        self.stall_seconds = stall_seconds
        self._tokens: float | None = None
        self._since: float = 0.0

    def update(self, snapshot: Snapshot) -> str | None:
        """The warning for this snapshot, or None when tokens flow or nothing runs."""
        running, tokens = snapshot.running or 0, snapshot.generation_tokens
        if running <= 0 or tokens is None:
            self._tokens = None
            return None
        if tokens != self._tokens:  # grew, or the server restarted
            self._tokens, self._since = tokens, snapshot.at
            return None
        stalled = snapshot.at - self._since
        if stalled < self.stall_seconds:
            return None
        return (
            f"no token generated for {stalled:.1f} s while {running:g} request(s) run: "
            "the engine may be hung (/health can still say 200); restart the server"
        )


@dataclass(frozen=True)
class Reading:
    """One refresh of the monitor: the server's state as seen now, ready to show."""

    url: str
    time: float  # wall clock, seconds since the epoch
    up: bool
    for_seconds: float  # how long the server has been up (its own start if it tells), or down
    error: str | None = None
    snapshot: Snapshot | None = None
    rates: Rates | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for one JSON line; cumulative counters as the server reports them."""
        snap, rates = self.snapshot, self.rates
        data: dict[str, Any] = {
            "time": round(self.time, 3),
            "server": self.url,
            "up": self.up,
            "for_s": round(self.for_seconds, 3),
            "error": self.error,
            "warning": self.warning,
        }
        if snap is not None:
            for name in (
                "running",
                "waiting",
                "kv_cache_usage",
                "prompt_tokens",
                "generation_tokens",
                "requests_finished",
                "preemptions",
            ):
                data[name] = getattr(snap, name)
        if rates is not None:
            data["rates"] = {
                "window_s": None if rates.seconds is None else round(rates.seconds, 3),
                "prompt_tokens_per_s": rates.prompt_tokens_per_s,
                "generation_tokens_per_s": rates.generation_tokens_per_s,
                "pages_per_s": rates.pages_per_s,
                "preemptions": rates.preemptions,
                "ttft_s": asdict(rates.ttft),
                "e2e_s": asdict(rates.e2e),
            }
        return data


class Monitor:
    """Polls one server: keeps the previous snapshot for rates, the hang watch, and up/down
    times. An unreachable server is a reading, not an error, so watching goes on."""

    def __init__(
        self,
        url: str,
        *,
        stall_seconds: float = 60.0,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.timeout = timeout
        self.watch = HangWatch(stall_seconds)
        self.readings = 0  # with metrics
        self._client = client or httpx.Client()
        self._owns_client = client is None
        self._previous: Snapshot | None = None
        self._up: bool | None = None
        self._since = 0.0

    def poll(self) -> Reading:
        now, wall = time.monotonic(), time.time()
        try:
            snapshot = parse(fetch(self.url, timeout=self.timeout, client=self._client), now)
        except EngineUnavailable as exc:
            self._mark(False, now)
            return Reading(self.url, wall, False, now - self._since, error=str(exc))
        self._mark(True, now)
        up_for = now - self._since
        if snapshot.started is not None:  # the server's own uptime, not just our view of it
            up_for = max(up_for, wall - snapshot.started)
        rates = Rates.between(self._previous, snapshot)
        self._previous = snapshot
        self.readings += 1
        return Reading(
            self.url,
            wall,
            True,
            up_for,
            snapshot=snapshot,
            rates=rates,
            warning=self.watch.update(snapshot),
        )

    def _mark(self, up: bool, now: float) -> None:
        if up != self._up:
            self._up, self._since = up, now

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
