"""The SDK's exceptions, and the gateway's error bodies turned into them."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import httpx
from pydantic import ValidationError

from dotsocr.errors import DotsOCRError
from dotsocr.gateway.models import ErrorResponse


class GatewayError(DotsOCRError):
    """The gateway refused a request (``status``, ``code``, ``message``), or gave no answer."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        self.status = status
        self.code = code
        self.message = " ".join(message.split())  # one line, whatever the body held
        super().__init__(f"{self.message} (HTTP {status})" if status else self.message)


class Unauthorized(GatewayError):
    """The gateway needs an API key and got none, or a wrong one (HTTP 401)."""


class JobNotFound(GatewayError):
    """No job of that id for this key: never made, deleted, or past retention (HTTP 404)."""


class RequestRefused(GatewayError):
    """The request itself is wrong: bad option, too large, wrong type (400, 413, 415, 422)."""


class GatewayBusy(GatewayError):
    """The gateway cannot take or finish the work now (503, 504, or no answer in time);
    ``retry_after`` is the seconds it asked to wait, when it said."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "busy",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class GatewayUnavailable(GatewayError):
    """No connection to the gateway: it is down, the URL is wrong, or the connection dropped."""


class WaitTimeout(GatewayError, TimeoutError):
    """``wait()`` ran past its timeout; the job goes on on the gateway."""


def _error(response: httpx.Response, has_key: bool) -> GatewayError:
    """The exception for a refused request, from the gateway's ``{"error": ...}`` body."""
    status = response.status_code
    try:
        body = ErrorResponse.model_validate_json(response.content).error
        code, message = body.code, body.message
    except ValidationError:  # not the gateway speaking: a proxy, or another server
        code, message = "http_error", (response.text.strip() or response.reason_phrase)[:300]
    if status == 401:
        advice = "the gateway refused the API key" if has_key else "the gateway needs an API key"
        return Unauthorized(f"{advice}: pass api_key=... to the client", status=401, code=code)
    if status == 404 and "/v1/jobs/" in response.request.url.path:
        return JobNotFound(message, status=status, code=code)
    if status == 404:
        return GatewayError(
            f"{response.request.url}: not found: is base_url the gateway's root?",
            status=status, code=code,
        )  # fmt: skip
    if status in (400, 413, 415, 422):
        return RequestRefused(message, status=status, code=code)
    if status in (503, 504):
        return GatewayBusy(message, status=status, code=code, retry_after=_retry_after(response))
    if status == 502:
        return GatewayUnavailable(f"a proxy could not reach the gateway: {message}", status=502)
    return GatewayError(message, status=status, code=code)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date); None when absent or garbled."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
