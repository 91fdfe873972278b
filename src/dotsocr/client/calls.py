"""What both clients share: calls described as data, how answers are read, uploads,
the event-stream parser and the waiting logic."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from dotsocr import __version__
from dotsocr.client.errors import (
    GatewayBusy,
    GatewayError,
    GatewayUnavailable,
    JobNotFound,
    RequestRefused,
    Unauthorized,
    WaitTimeout,
    _error,
)
from dotsocr.errors import ConfigError, DocumentError, NotADocument
from dotsocr.gateway.models import GatewayInfo, JobList, JobStatus, PageView, ParseOptions

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
KEEP_ALIVE = "keep-alive"  # the gateway's comment line on a quiet event stream


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


class _EventParser:
    """Server-sent events, fed line by line: a dict for each complete event."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        if line.startswith(":"):  # a comment; a keep-alive lets wait() look at its clock
            return {"event": KEEP_ALIVE} if "keep-alive" in line else None
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


def _jobs(limit: int) -> _Call[list[JobStatus]]:
    def read(response: httpx.Response) -> list[JobStatus]:
        return _model(JobList)(response).jobs

    return _Call("GET", "/v1/jobs", read, params={"limit": str(limit)})


def _page_path(job_id: str, file: int, page: int, tail: str = "") -> str:
    return _job_path(job_id, f"/files/{int(file)}/pages/{int(page)}{tail}")


def _page(job_id: str, file: int, page: int) -> _Call[PageView]:
    return _Call("GET", _page_path(job_id, file, page), _model(PageView))


def _page_image(job_id: str, file: int, page: int, width: int | None) -> _Call[bytes]:
    params = {"width": str(width)} if width is not None else None
    return _Call("GET", _page_path(job_id, file, page, "/image"), _bytes, params=params)


INFO: _Call[GatewayInfo] = _Call("GET", "/v1/info", _model(GatewayInfo))
HEALTH: _Call[dict[str, Any]] = _Call("GET", "/health", _json)
READY: _Call[bool] = _Call("GET", "/ready", _is_ready, answers=frozenset({503}))
