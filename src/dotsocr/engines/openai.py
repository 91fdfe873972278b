"""An engine for any OpenAI-compatible chat server, vLLM first.

httpx rather than the ``openai`` SDK: we need our own retry rules (Retry-After, no
retry on 4xx), a pool sized to our concurrency, vLLM's extra endpoints (/tokenize,
/health) and a transport seam for tests; the SDK would wrap httpx and hide all four.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import httpx

from dotsocr.engines.base import EngineAnswer
from dotsocr.engines.patience import Patience, Report
from dotsocr.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ContextTooLong,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageRefused,
    ModelNotServed,
    ServerSilent,
)
from dotsocr.models.base import ChatRequest, PreparedPage

RETRY_STATUSES = frozenset({429, 500, 503})
LOST_LIMIT = 4  # connections lost with the request sent (in flight at a crash, or a pooled
# connection the restarted server no longer has): more, and the page may be what kills it
SILENT_STATUSES = frozenset({502, 504})  # a gateway or router whose server does not answer
# (and 503 without Retry-After: a load balancer with no healthy server; with it, overload)
MESSAGE_LIMIT = 500  # servers echo whole inputs back in errors; keep messages readable
TEXT_TOKEN_CACHE = 256
SPARE_CONNECTIONS = 4  # for /v1/models and /tokenize beside a full set of inferences


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins when it gives one."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0  # a server may ask for longer than our own backoff

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retry`` (0-based); Retry-After is a floor."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))
        if retry_after is None:
            return backoff
        return max(backoff, min(max(retry_after, 0.0), self.max_retry_after))


@dataclass(frozen=True)
class ServerInfo:
    """What /v1/models told us."""

    model: str
    max_model_len: int | None
    served: tuple[str, ...] = field(default=())
    engine: str = "openai-compatible server"  # "vllm 0.32.0" when /version says so


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Silent(_Retryable):
    """No answer at all: nothing listening, the connection lost, a proxy with no server."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent  # the request had reached the server when its connection was lost


class OpenAIEngine:
    """Chat completions against an OpenAI-compatible server.

    The page travels inside the request as a data URL, so ``reads_pixels`` is False and
    callers may drop the resized image before sending.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is fine).
        api_key: sent as a Bearer token when given.
        model: the served model name; discovered from /v1/models when None.
        concurrency: requests in flight at once; the connection pool is sized to it.
        timeout: seconds to wait for one answer (a dense page can take minutes).
        retry: how often and how long to retry 429 and 5xx answers.
        server_timeout: seconds a server that does not answer at all (not yet up,
            restarting) is waited for before requests fail; None: it counts as a retry
            (the pool, which has other servers to try, waits on its own).
        on_wait: told every few seconds while requests wait for a silent server.
        transport: an httpx transport, for tests.

    Example:
        >>> async with OpenAIEngine("http://127.0.0.1:8000") as engine:
        ...     answer = await engine.infer(page, profile.build_request(page, "layout_all"))
    """

    reads_pixels = False

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
        server_timeout: float | None = None,
        on_wait: Report | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalise_url(base_url)
        self.retry = retry or RetryPolicy()
        self.patience = (
            Patience(self.base_url, server_timeout, on_wait) if server_timeout is not None else None
        )
        self.timeout = timeout
        self._wanted_model = model
        self._slots = asyncio.Semaphore(concurrency)
        connections = concurrency + SPARE_CONNECTIONS
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=timeout),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=transport,
        )
        self.info: ServerInfo | None = None
        self._text_tokens: OrderedDict[str, int] = OrderedDict()

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
        listed = data.get("data")
        entries = [e for e in listed or [] if isinstance(e, dict) and "id" in e]
        served = tuple(str(e["id"]) for e in entries)
        if not entries:
            raise EngineUnavailable(f"{self.base_url} serves no model yet: wait for it to load")
        chosen = self._wanted_model or served[0]
        if chosen not in served:
            raise ModelNotServed(
                f"Unknown model {chosen!r} at {self.base_url}. Served: {', '.join(served)}"
            )
        length = entries[served.index(chosen)].get("max_model_len")
        length = length if type(length) is int else None
        return ServerInfo(chosen, length, served, await self._engine_name())

    async def _engine_name(self) -> str:
        """vLLM and its version, from /version; a plain name for other servers."""
        try:
            data, _ = await self._call("GET", "/version")
        except (BadRequest, ModelNotServed, EngineUnavailable):
            return ServerInfo.engine
        version = data.get("version")
        return f"vllm {version}" if isinstance(version, str) and version else ServerInfo.engine

    async def probe(self) -> None:
        """Ask the server for its models again: ends a silence when it answers."""
        self.info = await self.discover()

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer:
        """Send one request; retries are counted in the answer's ``attempts``.

        The request already carries the page as a data URL; ``page`` is for engines
        that read pixels.
        """
        async with self._slots:
            started = time.perf_counter()
            data, attempts = await self._call(
                "POST", "/v1/chat/completions", request.to_openai(self.model)
            )
        return self._answer(data, started, attempts)

    async def text_tokens(self, prompt: str) -> int | None:
        """Tokens of a chat with ``prompt`` and no image (vLLM's /tokenize); None elsewhere."""
        if prompt in self._text_tokens:
            self._text_tokens.move_to_end(prompt)
        else:
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
            if len(self._text_tokens) > TEXT_TOKEN_CACHE:  # grounding prompts carry boxes
                self._text_tokens.popitem(last=False)
        return self._text_tokens[prompt]

    async def chat(
        self, text: str, *, max_tokens: int = 512, temperature: float = 0.1
    ) -> EngineAnswer:
        """One text-only user message (no image): the classic client's --text, and smoke tests."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        async with self._slots:
            started = time.perf_counter()
            data, attempts = await self._call("POST", "/v1/chat/completions", body)
        return self._answer(data, started, attempts)

    def _answer(self, data: dict[str, Any], started: float, attempts: int) -> EngineAnswer:
        """The text, finish reason and usage of a chat completion."""
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EngineError(
                f"{self.base_url} answered without a message: {data!r:.200}"
            ) from None
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        info = self.info
        return EngineAnswer(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            seconds=time.perf_counter() - started,
            attempts=attempts,
            engine=info.engine if info else ServerInfo.engine,
            model=info.model if info else None,
        )

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        """One call with retries; returns the JSON body and the attempts it took.

        Answers that ask for a retry (429, 5xx) are retried ``retry.attempts`` times; a
        server that does not answer at all is waited for (see ``Patience``).
        """
        attempt = failed = silent = lost = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, path, body), attempt
            except _Retryable as exc:
                error = exc
            if isinstance(error, _Silent):
                lost += error.sent
                if lost >= LOST_LIMIT:  # a server that dies of this page each time it is back
                    raise EngineUnavailable(
                        f"{self.base_url}: the connection was lost {lost} times while the "
                        f"server had this request ({error}): the page may be what breaks it; "
                        "look at the server's log"
                    ) from None
                if self.patience is not None:
                    await self.patience.wait(silent, str(error))
                    silent += 1
                    continue
            failed += 1
            if failed == self.retry.attempts:
                kind = ServerSilent if isinstance(error, _Silent) else EngineUnavailable
                raise kind(f"{self.base_url}: {error} (gave up after {attempt} attempts)") from None
            await asyncio.sleep(self.retry.delay(failed - 1, error.retry_after))

    def _heard(self) -> None:
        if self.patience is not None:
            self.patience.heard()

    @property
    def waiting(self) -> str | None:
        """Why requests are waiting now (the server does not answer), or None."""
        return self.patience.waiting if self.patience else None

    async def _once(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout):  # the whole answer, not each read
                response = await self._client.request(method, path, json=body)
        except httpx.ConnectTimeout:
            raise _Silent("connection timed out") from None
        except (TimeoutError, httpx.TimeoutException):
            raise EngineTimeout(
                f"{self.base_url} gave no answer within {self.timeout:g} s: "
                "raise the timeout or lower the page resolution"
            ) from None
        except httpx.ConnectError as exc:
            raise _Silent(_connect_reason(exc)) from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise ConfigError(f"cannot send to {self.base_url}: {exc}") from None
        except httpx.TransportError as exc:
            raise _Silent(f"connection lost ({exc or type(exc).__name__})", sent=True) from None
        except httpx.HTTPError as exc:  # e.g. a body that fails to decode
            raise _Retryable(f"unreadable answer ({exc or type(exc).__name__})") from None
        status = response.status_code
        if status in SILENT_STATUSES or (status == 503 and "Retry-After" not in response.headers):
            message, _ = _error(response)  # a proxy or router with no server behind it
            raise _Silent(f"HTTP {status}: {message}")
        self._heard()  # any other answer, wanted or not, ends a silence
        if response.status_code in RETRY_STATUSES:
            message, _ = _error(response)
            raise _Retryable(f"HTTP {response.status_code}: {message}", _retry_after(response))
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
        status = response.status_code
        message, param = _error(response)
        lowered = message.lower()
        where = f"{self.base_url}{path}"
        if status in (401, 403):
            return AuthenticationError(
                f"{where} refused the API key (HTTP {status}): pass the key the server was "
                "started with"
            )
        if status == 404 and "model" in lowered and body and "model" in body:
            return ModelNotServed(f"Unknown model {body['model']!r} at {self.base_url}: {message}")
        if status == 404:
            return BadRequest(
                f"{where} does not exist (HTTP 404): is this an OpenAI-compatible server?"
            )
        if param == "max_tokens":
            return BadRequest(f"{message} Lower max_tokens (the answer budget).")
        if any(word in lowered for word in ("context length", "input length", "max_model_len")):
            return ContextTooLong(
                f"{message} Lower the page resolution or raise the server's --max-model-len."
            )
        if status == 413 or any(word in lowered for word in ("image", "base64")):
            return ImageRefused(f"the server could not use the page image: {message}")
        return BadRequest(f"{where} refused the request (HTTP {status}): {message}")


def normalise_url(base_url: str) -> str:
    """A server's root URL (no trailing slash or /v1); ConfigError when it is not http(s)."""
    url = base_url.strip().rstrip("/")
    url = url[: -len("/v1")] if url.endswith("/v1") else url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"bad server URL {base_url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"bad server URL {base_url!r}: use http://HOST:PORT")
    return url


def _connect_reason(exc: httpx.ConnectError) -> str:
    """'connection refused' rather than httpx's 'All connection attempts failed'."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect ({exc or type(exc).__name__})"


def _error(response: httpx.Response) -> tuple[str, str | None]:
    """The error text (vLLM's body, FastAPI's, or the raw text) and the parameter it names."""
    try:
        data = response.json()
    except ValueError:
        return _short(response.text.strip() or response.reason_phrase), None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            param = error.get("param")
            return _short(str(error["message"])), param if isinstance(param, str) else None
        for key in ("message", "detail", "error"):
            if data.get(key):
                return _short(str(data[key])), None
    return _short(str(data)), None


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date); None when absent or garbled."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no zone named
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return seconds if math.isfinite(seconds) else None
