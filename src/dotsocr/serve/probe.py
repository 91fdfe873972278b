"""Asking a model server how it is: liveness, the models it serves, and one real OCR request."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import httpx
from PIL import Image, ImageDraw, ImageFont

from dotsocr.engines.openai import OpenAIEngine, RetryPolicy, normalise_url
from dotsocr.errors import AuthenticationError, DotsOCRError
from dotsocr.models import get_profile

TEST_TEXT = "TEST OCR 123"


@dataclass(frozen=True)
class Liveness:
    """One look at /health and /v1/models."""

    connected: bool  # something accepted the connection
    health: int | None  # /health's status code
    models: dict[str, int | None]  # served name -> max_model_len
    detail: str = ""


def look(client: httpx.Client) -> Liveness:
    """Never raises for a server that is down or loading; raises AuthenticationError for a
    key the server refuses, since no amount of waiting fixes that."""
    try:
        health = client.get("/health")
    except httpx.ConnectError:
        return Liveness(False, None, {}, "connection refused")
    except httpx.ConnectTimeout:  # nothing accepted the connection: no server, or a black hole
        return Liveness(False, None, {}, "connection timed out")
    except httpx.TimeoutException:
        return Liveness(True, None, {}, "connected, but /health did not answer (loading?)")
    except httpx.HTTPError as exc:
        return Liveness(True, None, {}, f"connection broken ({type(exc).__name__})")
    if health.status_code != 200:
        return Liveness(True, health.status_code, {}, f"/health answered {health.status_code}")
    try:
        listed = client.get("/v1/models")
    except httpx.HTTPError as exc:
        return Liveness(True, 200, {}, f"/v1/models failed ({type(exc).__name__})")
    if listed.status_code in (401, 403):
        raise AuthenticationError(
            f"{client.base_url} refused the API key (HTTP {listed.status_code}): pass the key "
            "the server was started with (--api-key or DOTSOCR_API_KEY)"
        )
    try:
        entries = listed.json().get("data") or []
        models = {
            str(e["id"]): e.get("max_model_len") if type(e.get("max_model_len")) is int else None
            for e in entries
            if isinstance(e, dict) and "id" in e
        }
    except (ValueError, AttributeError, TypeError):
        return Liveness(True, 200, {}, "/v1/models did not answer JSON")
    return Liveness(True, 200, models, "" if models else "no model listed yet")


def why_not_ready(state: Liveness, model: str | None = None) -> str:
    """Why the server is not ready for ``model`` (any model when None); empty when it is."""
    if state.health != 200 or not state.models:
        return state.detail or f"/health answered {state.health}"
    if model is not None and model not in state.models:
        return f"serves {', '.join(state.models)}, not {model!r}"
    return ""


def client(url: str, api_key: str | None, timeout: float = 5.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=normalise_url(url), headers=headers, timeout=timeout)


@dataclass(frozen=True)
class OCRCheck:
    seconds: float
    text: str
    found: bool  # the test text came back
    prompt_tokens: int | None
    completion_tokens: int | None


def make_test_image() -> Image.Image:
    """Black "TEST OCR 123" on white, large enough for any OCR model to read."""
    image = Image.new("RGB", (640, 160), "white")
    font = ImageFont.load_default(size=64)
    ImageDraw.Draw(image).text((32, 40), TEST_TEXT, fill="black", font=font)
    return image


def ocr_check(
    url: str, *, api_key: str | None = None, model: str | None = None, timeout: float = 120.0
) -> OCRCheck:
    """One real OCR request on the test image, through the same engine the pipeline uses.

    Raises the engine's errors (unreachable, refused, timed out) for the caller to report.
    """
    return asyncio.run(_ocr_check(url, api_key, model, timeout))


async def _ocr_check(url: str, api_key: str | None, model: str | None, timeout: float) -> OCRCheck:
    profile = get_profile("dots.ocr")
    image = make_test_image()
    prepared = profile.prepare(image, image.width, image.height)
    request = profile.build_request(prepared, "ocr", max_tokens=64, temperature=0.0)
    engine = OpenAIEngine(
        url, api_key=api_key, model=model, concurrency=1, timeout=timeout,
        retry=RetryPolicy(attempts=1),
    )  # fmt: skip
    started = time.perf_counter()
    async with engine:
        answer = await engine.infer(prepared, request)
    return OCRCheck(
        seconds=time.perf_counter() - started,
        text=answer.text,
        found=_normal(TEST_TEXT) in _normal(answer.text),
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
    )


def _normal(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def describe_error(exc: DotsOCRError) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
