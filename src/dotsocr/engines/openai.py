"""An engine for any OpenAI-compatible chat server, vLLM first.

httpx rather than the ``openai`` SDK: we need our own retry rules (Retry-After, no
retry on 4xx), a pool sized to our concurrency, vLLM's extra endpoints (/tokenize,
/health) and a transport seam for tests; the SDK would wrap httpx and hide all four.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import httpx

from dotsocr.engines.base import EngineAnswer
from dotsocr.errors import (
    AuthenticationError,
    BadRequest,
    ContextTooLong,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageRefused,
    UnknownModel,
)
from dotsocr.models.base import ChatRequest, PreparedPage

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins when it gives one."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a server may ask for longer than our own backoff

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


@dataclass(frozen=True)
class ServerInfo:
    """What /v1/models told us."""

    model: str
    max_model_len: int | None
    served: tuple[str, ...] = field(default=())


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIEngine:
    """Chat completions against an OpenAI-compatible server.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is fine).
        api_key: sent as a Bearer token when given.
        model: the served model name; discovered from /v1/models when None.
        concurrency: requests in flight at once; the connection pool is sized to it.
        timeout: seconds to wait for one answer (a dense page can take minutes).
        retry: how often and how long to retry connection errors, 429 and 5xx.
        transport: an httpx transport, for tests.

    Example:
        >>> async with OpenAIEngine("http://127.0.0.1:8000") as engine:
        ...     answer = await engine.infer(page, profile.build_request(page, "layout_all"))
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        concurrency: int = 64,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _normalise(base_url)
        self.retry = retry or RetryPolicy()
        self._wanted_model = model
        self._slots = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=None),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )
        self.info: ServerInfo | None = None
        self._text_tokens: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        try:
            self.info = await self.discover()
        except BaseException:
            await self._client.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    @property
    def model(self) -> str:
        if self.info is None:
            raise EngineError("the engine is not started: use it as 'async with OpenAIEngine(...)'")
        return self.info.model

    async def discover(self) -> ServerInfo:
        """Read the served models; pick ours and learn its context length."""
        data, _ = await self._call("GET", "/v1/models")
        entries = [e for e in data.get("data", []) if isinstance(e, dict) and "id" in e]
        served = tuple(str(e["id"]) for e in entries)
        if not entries:
            raise EngineUnavailable(f"{self.base_url} serves no model yet: wait for it to load")
        chosen = self._wanted_model or served[0]
        if chosen not in served:
            raise UnknownModel(
                f"Unknown model {chosen!r} at {self.base_url}. Served: {', '.join(served)}"
            )
        entry = entries[served.index(chosen)]
        length = entry.get("max_model_len")
        return ServerInfo(chosen, int(length) if isinstance(length, int) else None, served)

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer:
        """Send one request; retries are counted in the answer's ``attempts``."""
        started = time.perf_counter()
        async with self._slots:
            data, attempts = await self._call(
                "POST", "/v1/chat/completions", request.to_openai(self.model)
            )
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EngineError(
                f"{self.base_url} answered without a message: {data!r:.200}"
            ) from None
        usage = data.get("usage") or {}
        return EngineAnswer(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            seconds=time.perf_counter() - started,
            attempts=attempts,
        )

    async def text_tokens(self, prompt: str) -> int | None:
        """Tokens of a chat with ``prompt`` and no image (vLLM's /tokenize); None elsewhere."""
        if prompt not in self._text_tokens:
            body = {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "add_generation_prompt": True,
            }
            try:
                data, _ = await self._call("POST", "/tokenize", body)
            except BadRequest:
                return None  # not vLLM, or an old one
            count = data.get("count")
            if not isinstance(count, int):
                return None
            self._text_tokens[prompt] = count
        return self._text_tokens[prompt]

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        """One call with retries; returns the JSON body and the attempts it took."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await self._once(method, path, body), attempt
            except _Retryable as exc:
                if attempt == self.retry.attempts:
                    raise EngineUnavailable(
                        f"{self.base_url}: {exc} (gave up after {attempt} attempts)"
                    ) from None
                await asyncio.sleep(self.retry.delay(attempt - 1, exc.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.ConnectTimeout:
            raise _Retryable("connection timed out: is the server up?") from None
        except httpx.TimeoutException:
            raise EngineTimeout(
                f"{self.base_url} gave no answer within {self._client.timeout.read:g} s: "
                "raise the timeout or lower the page resolution"
            ) from None
        except httpx.ConnectError:
            raise _Retryable(
                "cannot connect: is the server running? (start one with 'dotsocr serve')"
            ) from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection lost ({exc or type(exc).__name__})") from None
        if response.status_code in RETRY_STATUSES:
            raise _Retryable(
                f"HTTP {response.status_code}: {_message(response)}", _retry_after(response)
            )
        if response.status_code >= 400:
            raise self._refusal(response, path, body)
        try:
            data = response.json()
        except ValueError:
            raise _Retryable("the answer was not JSON (cut off?)") from None
        if not isinstance(data, dict):
            raise _Retryable("the answer was not a JSON object")
        return data

    def _refusal(
        self, response: httpx.Response, path: str, body: dict[str, Any] | None
    ) -> EngineError:
        """The most specific error for a 4xx answer."""
        status, message = response.status_code, _message(response)
        lowered = message.lower()
        where = f"{self.base_url}{path}"
        if status in (401, 403):
            return AuthenticationError(
                f"{where} refused the API key (HTTP {status}): pass the key the server was "
                "started with"
            )
        if status == 404 and "model" in lowered and body and "model" in body:
            return UnknownModel(f"Unknown model {body['model']!r} at {self.base_url}: {message}")
        if status == 404:
            return BadRequest(
                f"{where} does not exist (HTTP 404): is this an OpenAI-compatible server?"
            )
        if any(word in lowered for word in ("context length", "input length", "max_model_len")):
            return ContextTooLong(
                f"{message} Lower the page resolution or raise the server's --max-model-len."
            )
        if status == 413 or any(word in lowered for word in ("image", "base64")):
            return ImageRefused(f"the server could not use the page image: {message}")
        return BadRequest(f"{where} refused the request (HTTP {status}): {message}")


def _normalise(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _message(response: httpx.Response) -> str:
    """The error text from vLLM's body, FastAPI's, or the raw text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (when - datetime.now(UTC)).total_seconds()
