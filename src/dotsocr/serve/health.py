"""A one-shot health report of a model server, with a verdict scripts can act on."""

from __future__ import annotations

import dataclasses
import time
from enum import IntEnum
from typing import Any

import httpx
from pydantic import BaseModel

from dotsocr.errors import DotsOCRError, EngineError
from dotsocr.serve.probe import TEST_TEXT, client, look, ocr_check, why_not_ready


class Verdict(IntEnum):
    """The report's conclusion; the value is ``dotsocr health``'s exit code."""

    HEALTHY = 0
    DOWN = 1
    DEGRADED = 3


class OCRResult(BaseModel):
    seconds: float | None = None
    text: str | None = None
    found_test_text: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


class HealthReport(BaseModel):
    url: str
    reachable: bool
    ready: bool
    health_status: int | None
    version: str | None = None
    models: dict[str, int | None] = {}
    metrics: dict[str, Any] | None = None
    ocr: OCRResult | None = None
    verdict: str
    problems: list[str] = []
    seconds: float

    @property
    def exit_code(self) -> int:
        return Verdict[self.verdict.upper()].value


def check(
    url: str,
    *,
    api_key: str | None = None,
    model: str | None = None,
    ocr: bool = True,
    expect_text: bool = True,
    timeout: float = 120.0,
) -> HealthReport:
    """Look at the server once: liveness, models, version, metrics and one OCR request.

    With ``expect_text`` a model that does not read back the test text makes the verdict
    "degraded" (right for real weights; turn it off for random-weight test servers).
    """
    started = time.perf_counter()
    problems: list[str] = []
    with client(url, api_key) as http:
        state = look(http)
        version = _version(http) if state.connected else None
    problem = why_not_ready(state, model)
    ready = not problem
    if problem:
        problems.append(problem)
    result: OCRResult | None = None
    if ready and ocr:
        result = _ocr(url, api_key, model, timeout)
        if result.error:
            problems.append(f"the OCR request failed: {result.error}")
        elif expect_text and not result.found_test_text:
            problems.append(
                f"the answer does not contain {TEST_TEXT!r} (wrong model, or random weights?): "
                f"{(result.text or '')[:80]!r}"
            )
    metrics = _metrics(url) if state.connected else None  # after the OCR request: it counts
    if not ready:
        verdict = Verdict.DOWN
    elif problems:
        verdict = Verdict.DEGRADED
    else:
        verdict = Verdict.HEALTHY
    return HealthReport(
        url=str(url),
        reachable=state.connected,
        ready=ready,
        health_status=state.health,
        version=version,
        models=state.models,
        metrics=metrics,
        ocr=result,
        verdict=verdict.name.lower(),
        problems=problems,
        seconds=round(time.perf_counter() - started, 3),
    )


def _version(http: httpx.Client) -> str | None:
    try:
        answer = http.get("/version")
        return str(answer.json().get("version")) if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _metrics(url: str) -> dict[str, Any] | None:
    """The gauges and counters a person looks at first; None when /metrics is missing."""
    from dotsocr.serve import metrics

    try:
        snapshot = metrics.parse(metrics.fetch(url), time.time())
    except DotsOCRError:
        return None
    summary: dict[str, Any] = {
        name: value
        for name, value in dataclasses.asdict(snapshot).items()
        if name not in ("at", "histograms")
    }
    latency = metrics.Quantiles.of(snapshot.histograms.get("e2e_request_latency_seconds"))
    summary["e2e_p50_seconds"] = latency.p50
    return summary


def _ocr(url: str, api_key: str | None, model: str | None, timeout: float) -> OCRResult:
    try:
        check = ocr_check(url, api_key=api_key, model=model, timeout=timeout)
    except EngineError as exc:
        return OCRResult(error=str(exc))
    return OCRResult(
        seconds=round(check.seconds, 3),
        text=check.text,
        found_test_text=check.found,
        prompt_tokens=check.prompt_tokens,
        completion_tokens=check.completion_tokens,
    )
