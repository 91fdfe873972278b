"""The Python SDK for ``dotsocr gateway``: ``Client``, and its async twin ``AsyncClient``.

Both speak the gateway's REST API with the gateway's own request and response models
(``dotsocr.gateway.models``) and turn its error bodies back into exceptions. Each call
is described once, as a ``_Call`` (what to send, how to read the answer); the two
classes differ only in how they send it.

DotsOCRError
 └── GatewayError             the gateway refused a request, or gave no answer
      ├── Unauthorized         401: missing or wrong API key
      ├── JobNotFound          404: no such job for this key (finished long ago, or deleted)
      ├── RequestRefused       400, 413, 415, 422: the request itself is wrong
      ├── GatewayBusy          503, 504: queue full, not ready, or no answer in time
      ├── GatewayUnavailable   no connection: the gateway is down or the URL is wrong
      └── WaitTimeout          wait() ran out of time; the job goes on
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from dotsocr import __version__
from dotsocr.errors import ConfigError, DocumentError, DotsOCRError, NotADocument
from dotsocr.gateway.models import ErrorResponse, JobStatus, ParseOptions, ParseResult

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Document = str | os.PathLike[str] | bytes | tuple[str, bytes] | IO[bytes]
"""A path, raw bytes, a ``(name, bytes)`` pair, or an open binary file."""
Files = Document | Sequence[Document]
Task = Literal["layout", "layout-only", "ocr"]
OnProgress = Callable[[dict[str, Any]], Any]

DEFAULT_TIMEOUT = 180.0  # longer than the gateway's 120 s on /v1/parse, so its 504 comes first
CONNECT_TIMEOUT = 10.0
POLL_EVERY = 1.0  # seconds between status checks while the event stream is gone
STALL = 30.0  # seconds of silence on the event stream before wait() checks the status
ENDED = frozenset({"done", "failed", "cancelled"})


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


# What both clients share: calls described as data, and how answers are read.


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request to the gateway and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    answers: frozenset[int] = frozenset()  # statuses that are answers, not errors


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    def read(response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise _not_a_gateway(response) from None

    return read


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        return dict(response.json())
    except (ValueError, TypeError):
        raise _not_a_gateway(response) from None


def _not_a_gateway(response: httpx.Response) -> GatewayError:
    return GatewayError(
        f"{response.request.url} did not answer like a dotsocr gateway: check base_url",
        status=response.status_code, code="bad_answer",
    )  # fmt: skip


def _text(response: httpx.Response) -> str:
    return response.text


def _bytes(response: httpx.Response) -> bytes:
    return response.content


def _nothing(response: httpx.Response) -> None:
    return None


def _is_ready(response: httpx.Response) -> bool:
    return response.status_code == 200


def _job_path(job_id: str, tail: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


def _upload(
    path: str,
    read: Callable[[httpx.Response], T],
    files: Files,
    options: dict[str, Any],
    webhook: str | None = None,
    params: dict[str, str] | None = None,
) -> _Call[T]:
    """A multipart POST of ``files`` with the parse options as form fields."""
    data = _form(options)
    if webhook:
        data["webhook"] = webhook
    uploads = [("files", (name, body, "application/octet-stream")) for name, body in _read(files)]
    return _Call("POST", path, read, params=params, data=data, files=uploads)


def _form(options: dict[str, Any]) -> dict[str, str]:
    """The options as form fields, checked here so a bad one fails before any upload."""
    try:
        parsed = ParseOptions(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        message = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise RequestRefused(message, code="invalid") from None
    fields = parsed.model_dump(exclude_unset=True)
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in fields.items()}


def _read(files: Files) -> list[tuple[str, bytes]]:
    """``files`` as (name, bytes) pairs: one document or a sequence of them."""
    items: Sequence[Document] = [files] if _is_one(files) else files  # type: ignore[list-item]
    if not items:
        raise RequestRefused("no file: pass a path, bytes, (name, bytes), or a list of them")
    names = ["document"] if len(items) == 1 else [f"document-{i + 1}" for i in range(len(items))]
    return [_document(item, name) for item, name in zip(items, names, strict=True)]


def _is_one(files: Files) -> bool:
    if isinstance(files, str | bytes | bytearray | os.PathLike) or hasattr(files, "read"):
        return True
    return (
        isinstance(files, tuple)
        and len(files) == 2
        and isinstance(files[0], str)
        and isinstance(files[1], bytes | bytearray)
    )


def _document(item: Document, default_name: str) -> tuple[str, bytes]:
    if isinstance(item, bytes | bytearray):
        return default_name, bytes(item)
    if isinstance(item, tuple):
        name, data = item
        if isinstance(name, str) and isinstance(data, bytes | bytearray):
            return name, bytes(data)
    elif isinstance(item, str | os.PathLike):
        path = Path(item)
        try:
            return path.name, path.read_bytes()
        except FileNotFoundError:
            raise NotADocument(str(item), "no such file: check the path") from None
        except IsADirectoryError:
            raise NotADocument(str(item), "a folder: pass the files in it") from None
        except OSError as exc:
            raise DocumentError(str(item), exc.strerror or str(exc)) from None
    elif hasattr(item, "read"):
        data = item.read()
        if isinstance(data, bytes):
            return Path(str(getattr(item, "name", default_name))).name, data
    raise TypeError(
        f"cannot upload {type(item).__name__}: pass a path, bytes, (name, bytes), "
        "or a file opened in binary mode"
    )


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


class _EventParser:
    """Server-sent events, fed line by line: a dict for each complete event."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        if line.startswith(":"):  # a comment, such as a keep-alive
            return None
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self.name = value
            elif field == "data":
                self.data.append(value)
            return None
        name, data = self.name, self.data
        self.name, self.data = None, []
        if not data:
            return None
        event = json.loads("\n".join(data))
        if not isinstance(event, dict):
            event = {"data": event}
        event.setdefault("event", name or "message")
        return event


class _Waiter:
    """What ``wait()`` keeps between tries: its deadline, and the pages already reported."""

    def __init__(self, job_id: str, timeout: float | None, on_progress: OnProgress | None) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.on_progress = on_progress
        self.streaming = True
        self.seen: set[tuple[Any, Any]] = set()

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise WaitTimeout(
                f"job {self.job_id} did not end within {self.timeout:g} s; it goes on: "
                "wait again, or delete it",
                code="wait_timeout",
            )  # fmt: skip

    def read_timeout(self) -> float:
        """How long one read of the event stream may take before the status is checked."""
        left = self.left()
        return STALL if left is None else max(0.01, min(STALL, left))

    def pause(self) -> float:
        self.check()
        left = self.left()
        return POLL_EVERY if left is None else max(0.0, min(POLL_EVERY, left))

    def new(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` is a page to report: a page event not reported before."""
        if event.get("event") != "page" or self.on_progress is None:
            return False
        key = (event.get("file"), event.get("page"))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def dropped(self, exc: GatewayError) -> None:
        """After the event stream failed: keep it if it only dropped, else poll from now on."""
        if isinstance(exc, Unauthorized | JobNotFound | WaitTimeout):
            raise exc
        if not isinstance(exc, GatewayUnavailable | GatewayBusy):
            self.streaming = False  # the events URL refuses us (a proxy?): poll from now on

    def missed(self, status: JobStatus) -> bool:
        """Whether pages ended unreported while the stream was down (a replay gives them)."""
        ended = status.pages.done + status.pages.failed
        return self.streaming and self.on_progress is not None and ended > len(self.seen)


class _Base:
    """Settings and error translation: the part of both clients that does no I/O."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = _root(base_url)
        self._has_key = api_key is not None
        self._timeout = timeout
        headers = {"User-Agent": f"dotsocr/{__version__}"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self._options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": headers,
            "timeout": self._limits(timeout),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _limits(self, read: float | None) -> httpx.Timeout:
        connect = min(self._timeout, CONNECT_TIMEOUT)
        return httpx.Timeout(self._timeout, connect=connect, read=read)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """httpx's transport errors as ours, translated here and nowhere else."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise GatewayUnavailable(
                f"cannot reach the gateway at {self.base_url} ({exc}): start it with "
                "`dotsocr gateway`, or check base_url",
                code="unavailable",
            ) from exc  # fmt: skip
        except httpx.TimeoutException as exc:
            raise GatewayBusy(
                f"no answer from the gateway at {self.base_url} within the timeout "
                f"({self._timeout:g} s): raise timeout=, or submit() and wait()",
                code="client_timeout",
            ) from exc  # fmt: skip
        except httpx.RequestError as exc:  # dropped connection, garbled answer, redirect loop
            raise GatewayUnavailable(
                f"the request to the gateway at {self.base_url} failed: {exc}",
                code="unavailable",
            ) from exc  # fmt: skip

    def _answer(self, call: _Call[T], response: httpx.Response) -> T:
        if not response.is_success and response.status_code not in call.answers:
            raise _error(response, self._has_key)
        return call.read(response)

    def _stream_ended(self, job_id: str) -> GatewayUnavailable:
        return GatewayUnavailable(
            f"the event stream of job {job_id} ended before the job did", code="stream_ended"
        )


def _root(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"bad gateway URL {base_url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"bad gateway URL {base_url!r}: use http://HOST:PORT")
    return url


# The calls, each described once.


def _parse(files: Files, options: dict[str, Any], fmt: str, read: Callable[..., T]) -> _Call[T]:
    return _upload("/v1/parse", read, files, options, params={"format": fmt})


def _submit(files: Files, options: dict[str, Any], webhook: str | None) -> _Call[JobStatus]:
    return _upload("/v1/jobs", _model(JobStatus), files, options, webhook)


def _status(job_id: str) -> _Call[JobStatus]:
    return _Call("GET", _job_path(job_id), _model(JobStatus))


def _result(job_id: str, fmt: str, read: Callable[[httpx.Response], T]) -> _Call[T]:
    return _Call("GET", _job_path(job_id, "/result"), read, params={"format": fmt})


def _delete(job_id: str) -> _Call[None]:
    return _Call("DELETE", _job_path(job_id), _nothing)


HEALTH: _Call[dict[str, Any]] = _Call("GET", "/health", _json)
READY: _Call[bool] = _Call("GET", "/ready", _is_ready, answers=frozenset({503}))


class Client(_Base):
    """A blocking client of ``dotsocr gateway``.

    Args:
        base_url: the gateway's root URL, such as ``http://127.0.0.1:8080``.
        api_key: the key the gateway was started with (``--api-key``), if any.
        timeout: seconds to wait for an answer; ``parse()`` waits while the pages are read.
        transport: an ``httpx`` transport, to route requests elsewhere (tests, proxies).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.

    Example:
        >>> with Client("http://127.0.0.1:8080", api_key="secret") as client:
        ...     print(client.parse_markdown("scan.pdf", pages="1-3"))
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.Client(transport=transport, **self._options)

    def _send(self, call: _Call[T]) -> T:
        with self._mapped():
            response = self._http.request(
                call.method, call.path, params=call.params, data=call.data, files=call.files
            )
        return self._answer(call, response)

    def parse(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> ParseResult:
        """Read documents now: the answer comes when every page is read.

        Args:
            files: a path, bytes, a ``(name, bytes)`` pair, a binary file, or a list of them.
            task: ``layout`` (cells with boxes and text), ``layout-only`` or ``ocr``.
            pages: a selection such as ``1-3,7`` (1-based); all pages when None.
            dpi: PDF render resolution; the gateway's default when None.
            headers_footers: keep page headers and footers in the Markdown.

        Returns:
            The job's status, its Markdown and its layout JSON (one dict per file). A file
            that cannot be read is not an exception: see ``job.files[i].error`` and
            ``job.state`` (``failed`` when nothing could be read).

        Raises:
            RequestRefused: a bad option, or an upload over the gateway's limits.
            GatewayBusy: the queue is full, or the pages took longer than the gateway
                waits (HTTP 504: the job goes on; large documents belong in ``submit()``).
            Unauthorized, GatewayUnavailable: see the class docstrings.

        Example:
            >>> result = client.parse(["a.pdf", ("b.png", png_bytes)], task="ocr")
            >>> result.job.pages.done, result.markdown[:40]
        """
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return self._send(_parse(files, options, "json", _model(ParseResult)))

    def parse_markdown(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> str:
        """Like ``parse()``, but only the Markdown: ``client.parse_markdown("a.pdf")``."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return self._send(_parse(files, options, "md", _text))

    def submit(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
        webhook: str | None = None,
    ) -> JobStatus:
        """Start a job and return at once; pages are read in fair turns with other jobs.

        Args:
            files, task, pages, dpi, headers_footers: as for ``parse()``.
            webhook: an http(s) URL the gateway calls with the job's status when it ends.

        Returns:
            The new job's status; ``.id`` names it in the other calls.

        Raises:
            RequestRefused, GatewayBusy, Unauthorized, GatewayUnavailable: as ``parse()``.

        Example:
            >>> job = client.submit("book.pdf")
            >>> client.wait(job.id, on_progress=lambda e: print(e["done"], "/", e["total"]))
            >>> client.zip(job.id)
        """
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return self._send(_submit(files, options, webhook))

    def status(self, job_id: str) -> JobStatus:
        """The job's state, queue position, pages done of total, timings and tokens."""
        return self._send(_status(job_id))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> JobStatus:
        """Block until the job ends, following its event stream (polling if it drops).

        Args:
            job_id: the id ``submit()`` returned.
            timeout: seconds to wait at most; None waits as long as the job runs.
            on_progress: called once per finished page with its event, a dict with
                ``file``, ``name``, ``page``, ``status``, ``error``, ``seconds``,
                ``done`` and ``total``.

        Returns:
            The job's final status: ``state`` is ``done`` or ``failed`` (not an exception).

        Raises:
            WaitTimeout: ``timeout`` passed first; the job goes on.
            JobNotFound: no such job, or it was deleted while waiting.

        Example:
            >>> status = client.wait(job.id, timeout=600, on_progress=print)
        """
        waiter = _Waiter(job_id, timeout, on_progress)
        while True:
            if waiter.streaming and self._follow(waiter):
                return self.status(job_id)
            status = self.status(job_id)
            if status.state in ENDED:
                if waiter.missed(status):
                    self._follow(waiter)  # the stream replays finished pages: report the rest
                return status
            time.sleep(waiter.pause())

    def _follow(self, waiter: _Waiter) -> bool:
        """Report page events until ``done`` (True) or until the stream fails (False)."""
        try:
            with closing(self._events(waiter.job_id, waiter.read_timeout())) as events:
                for event in events:
                    if waiter.new(event):
                        waiter.on_progress(event)  # type: ignore[misc]
                    if event["event"] == "done":
                        return True
                    waiter.check()
        except GatewayError as exc:
            waiter.dropped(exc)
        return False

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's events: each page finished so far, the rest as they finish, then
        ``{"event": "done", "state": ...}``.

        Example:
            >>> for event in client.events(job.id):
            ...     print(event["event"], event.get("page"))
        """
        yield from self._events(job_id, None)

    def _events(self, job_id: str, read_timeout: float | None) -> Iterator[dict[str, Any]]:
        call = _Call("GET", _job_path(job_id, "/events"), _nothing)
        with self._mapped(), self._http.stream(
            call.method, call.path, timeout=self._limits(read_timeout)
        ) as response:  # fmt: skip
            if not response.is_success:
                response.read()
                self._answer(call, response)
            parser = _EventParser()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
                    if event["event"] == "done":
                        return
        raise self._stream_ended(job_id)

    def result(self, job_id: str) -> ParseResult:
        """The job's status and layout JSON: partial while it runs, complete after.
        (``markdown`` is None here: ask ``markdown()``.)"""
        return self._send(_result(job_id, "json", _model(ParseResult)))

    def markdown(self, job_id: str) -> str:
        """The job's Markdown (files separated by ``<!-- name -->`` comments)."""
        return self._send(_result(job_id, "md", _text))

    def zip(self, job_id: str) -> bytes:
        """A zip archive with one ``.md`` and one ``.json`` per file."""
        return self._send(_result(job_id, "zip", _bytes))

    def delete(self, job_id: str) -> None:
        """Cancel the job (pages not yet read are dropped) and remove its files."""
        self._send(_delete(job_id))

    def health(self) -> dict[str, Any]:
        """The gateway's liveness answer: ``{"status": "alive", "version": ...}``."""
        return self._send(HEALTH)

    def ready(self) -> bool:
        """Whether the gateway can read pages now (its model server is connected)."""
        return self._send(READY)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The async twin of ``Client``: the same methods, awaited; ``aclose()`` for ``close()``.

    Example:
        >>> async with AsyncClient("http://127.0.0.1:8080") as client:
        ...     job = await client.submit("book.pdf")
        ...     await client.wait(job.id, on_progress=print)
        ...     text = await client.markdown(job.id)
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(transport=transport, **self._options)

    async def _send(self, call: _Call[T]) -> T:
        with self._mapped():
            response = await self._http.request(
                call.method, call.path, params=call.params, data=call.data, files=call.files
            )
        return self._answer(call, response)

    async def parse(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> ParseResult:
        """See ``Client.parse``. Local files are read in a worker thread."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        call = await asyncio.to_thread(_parse, files, options, "json", _model(ParseResult))
        return await self._send(call)

    async def parse_markdown(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> str:
        """See ``Client.parse_markdown``."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return await self._send(await asyncio.to_thread(_parse, files, options, "md", _text))

    async def submit(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
        webhook: str | None = None,
    ) -> JobStatus:
        """See ``Client.submit``."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return await self._send(await asyncio.to_thread(_submit, files, options, webhook))

    async def status(self, job_id: str) -> JobStatus:
        """See ``Client.status``."""
        return await self._send(_status(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> JobStatus:
        """See ``Client.wait``; ``on_progress`` may also be a coroutine function."""
        waiter = _Waiter(job_id, timeout, on_progress)
        while True:
            if waiter.streaming and await self._follow(waiter):
                return await self.status(job_id)
            status = await self.status(job_id)
            if status.state in ENDED:
                if waiter.missed(status):
                    await self._follow(waiter)
                return status
            await asyncio.sleep(waiter.pause())

    async def _follow(self, waiter: _Waiter) -> bool:
        """See ``Client._follow``."""
        try:
            async with aclosing(self._events(waiter.job_id, waiter.read_timeout())) as events:
                async for event in events:
                    if waiter.new(event):
                        outcome = waiter.on_progress(event)  # type: ignore[misc]
                        if inspect.isawaitable(outcome):
                            await outcome
                    if event["event"] == "done":
                        return True
                    waiter.check()
        except GatewayError as exc:
            waiter.dropped(exc)
        return False

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """See ``Client.events``: ``async for event in client.events(job.id): ...``."""
        async with aclosing(self._events(job_id, None)) as events:
            async for event in events:
                yield event

    async def _events(
        self, job_id: str, read_timeout: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        call = _Call("GET", _job_path(job_id, "/events"), _nothing)
        with self._mapped():
            async with self._http.stream(
                call.method, call.path, timeout=self._limits(read_timeout)
            ) as response:
                if not response.is_success:
                    await response.aread()
                    self._answer(call, response)
                parser = _EventParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event["event"] == "done":
                            return
        raise self._stream_ended(job_id)

    async def result(self, job_id: str) -> ParseResult:
        """See ``Client.result``."""
        return await self._send(_result(job_id, "json", _model(ParseResult)))

    async def markdown(self, job_id: str) -> str:
        """See ``Client.markdown``."""
        return await self._send(_result(job_id, "md", _text))

    async def zip(self, job_id: str) -> bytes:
        """See ``Client.zip``."""
        return await self._send(_result(job_id, "zip", _bytes))

    async def delete(self, job_id: str) -> None:
        """See ``Client.delete``."""
        await self._send(_delete(job_id))

    async def health(self) -> dict[str, Any]:
        """See ``Client.health``."""
        return await self._send(HEALTH)

    async def ready(self) -> bool:
        """See ``Client.ready``."""
        return await self._send(READY)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
