"""The SDK (``dotsocr.client``) against a real gateway process on loopback (CPU engine).

Every method runs twice, through ``Client`` and through ``AsyncClient``: the async one is
driven from these synchronous tests by ``Blocking``, which runs it on an event loop in a
thread. Fault tests wrap the real transport (``DropEvents``) instead of patching.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import re
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from dotsocr.client import (
    AsyncClient,
    Client,
    GatewayBusy,
    GatewayError,
    GatewayUnavailable,
    JobNotFound,
    RequestRefused,
    Unauthorized,
    WaitTimeout,
)
from dotsocr.errors import NotADocument
from dotsocr.gateway.models import GatewayInfo, JobStatus, PageView, ParseResult
from gateway_support import running_gateway
from vllm_support.server import free_port

PDF = Path(__file__).parent / "data" / "multi_page.pdf"
FIRST = "## The Evolution of the Word Processor"  # how the CPU engine reads page 1
KEY = "test-key"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway with the CPU engine and an API key, for the whole module."""
    folder = tmp_path_factory.mktemp("gateway") / "data"
    with running_gateway(folder, "--engine", "cpu", "--api-key", KEY) as started:
        yield started.url


@pytest.fixture(scope="module")
def stuck_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway whose model server never answers: not ready, a tiny queue, a short wait."""
    dead = f"http://127.0.0.1:{free_port()}"
    tmp = tmp_path_factory.mktemp("stuck")
    limits = {
        "DOTSOCR_MAX_QUEUED_PAGES": "4",
        "DOTSOCR_SYNC_TIMEOUT": "0.5",
        "DOTSOCR_EVENT_KEEP_ALIVE": "0.3",
    }
    with running_gateway(tmp / "data", "--engine", "server", "--server", dead, env=limits) as g:
        yield g.url


class Blocking:
    """An ``AsyncClient`` called like a ``Client``, on its own event loop in a thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = AsyncClient(*args, **kwargs)

    def _run(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            outcome = method(*args, **kwargs)
            if inspect.isasyncgen(outcome):
                return iter(self._run(_collect(outcome)))
            return self._run(outcome)

        return call

    def close(self) -> None:
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _collect(events: Any) -> list[Any]:
    return [event async for event in events]


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Opens a Client, or an AsyncClient behind ``Blocking``; closes them after the test."""
    opened: list[Any] = []

    def open_(*args: Any, transport: Any = None, **kwargs: Any) -> Any:
        if request.param == "sync":
            client: Any = Client(*args, transport=transport and transport.sync, **kwargs)
        else:
            client = Blocking(*args, transport=transport and transport.asynchronous, **kwargs)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.close()


@pytest.fixture
def client(gateway: str, connect: Callable[..., Any]) -> Any:
    return connect(gateway, KEY)


def test_parse_answers_markdown_and_layout(client: Any) -> None:
    result = client.parse(PDF, pages="1")
    assert isinstance(result, ParseResult)
    assert result.job.state == "done" and result.job.pages.done == 1
    assert result.markdown.startswith(FIRST)
    assert result.documents[0]["source"] == "multi_page.pdf"
    assert len(result.documents[0]["pages"]) == 1


def test_parse_markdown_takes_each_kind_of_file(client: Any) -> None:
    data = PDF.read_bytes()
    files = [str(PDF), ("first.pdf", data), data, io.BytesIO(data)]
    text = client.parse_markdown(files, pages="1")
    assert text.count(FIRST) == 4
    for name in ("multi_page.pdf", "first.pdf", "document-3", "document-4"):
        assert f"<!-- {name} -->" in text


def test_parse_passes_the_options(client: Any) -> None:
    text = client.parse_markdown(PDF, pages="1", task="ocr", dpi=100, headers_footers=True)
    assert text.startswith("The Evolution of the Word Processor")  # ocr: plain text


def test_a_job_from_submit_to_delete(client: Any) -> None:
    job = client.submit(PDF, pages="1-3")
    assert isinstance(job, JobStatus) and job.state in ("queued", "running")
    events: list[dict[str, Any]] = []
    final = client.wait(job.id, timeout=30, on_progress=events.append)
    assert final.state == "done" and final.pages.done == 3
    assert sorted(e["page"] for e in events) == [1, 2, 3]  # one event per page, no repeats
    assert {e["total"] for e in events} == {3} and max(e["done"] for e in events) == 3

    assert client.status(job.id).state == "done"
    replay = list(client.events(job.id))
    assert [e["event"] for e in replay] == ["page"] * 3 + ["done"]
    assert replay[-1]["state"] == "done"
    assert len(client.result(job.id).documents[0]["pages"]) == 3
    assert client.markdown(job.id).startswith(FIRST)
    with zipfile.ZipFile(io.BytesIO(client.zip(job.id))) as archive:
        assert sorted(archive.namelist()) == ["00-multi_page.pdf.json", "00-multi_page.pdf.md"]

    client.delete(job.id)
    with pytest.raises(JobNotFound, match="no job"):
        client.status(job.id)


def test_jobs_pages_page_images_and_info(
    gateway: str, connect: Callable[..., Any], client: Any
) -> None:
    """What the web page builds on: the gateway's facts (no key needed), this key's jobs
    newest first, one page's result, and the page image its boxes are drawn on."""
    info = connect(gateway).info()
    assert isinstance(info, GatewayInfo)
    assert (info.auth, info.engine, info.ready) == (True, "cpu", True)
    assert {c.name for c in info.categories} >= {"Title", "Text", "Table"}
    assert client.info().limits == info.limits  # the same with a key

    job = client.submit(PDF, pages="1-2")
    assert client.wait(job.id, timeout=30).state == "done"
    listed = client.jobs()
    assert isinstance(listed[0], JobStatus) and listed[0].id == job.id  # newest first
    assert listed[0].files[0].selected == "1-2"
    assert [j.id for j in client.jobs(limit=1)] == [job.id]

    view = client.page(job.id, 0, 1)
    assert isinstance(view, PageView)
    assert (view.state, view.page, view.name) == ("done", 1, "multi_page.pdf")
    assert view.markdown.startswith(FIRST) and "<h2>" in view.html
    first = client.result(job.id).documents[0]["pages"][0]
    assert view.result["cells"] == first["cells"]

    image = Image.open(io.BytesIO(client.page_image(job.id, 0, 1, width=200)))
    assert image.format == "JPEG" and image.width == 200
    image = Image.open(io.BytesIO(client.page_image(job.id, 0, 1)))
    assert image.size == (first["width"], first["height"])  # the frame of the boxes

    with pytest.raises(JobNotFound) as missing:
        client.page(job.id, 0, 5)  # page 5 was not selected
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(JobNotFound):
        client.page_image(job.id, 1, 1)  # the job has one file
    with pytest.raises(RequestRefused) as refused:
        client.page_image(job.id, 0, 1, width=5)
    assert refused.value.status == 422

    client.delete(job.id)
    assert job.id not in [j.id for j in client.jobs()]


def test_health_and_ready(client: Any) -> None:
    assert client.health()["status"] == "alive"
    assert client.ready() is True


def test_wait_gives_up_at_its_timeout(client: Any) -> None:
    job = client.submit(PDF, pages="1")
    with pytest.raises(WaitTimeout, match="did not end within") as caught:
        client.wait(job.id, timeout=0.05)
    assert isinstance(caught.value, TimeoutError)
    client.delete(job.id)


def test_errors_map_to_the_tree(gateway: str, connect: Callable[..., Any]) -> None:
    with pytest.raises(Unauthorized, match="refused the API key") as caught:
        connect(gateway, "wrong-key").status("any")
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    with pytest.raises(Unauthorized, match="needs an API key"):
        connect(gateway).submit(PDF)
    assert connect(gateway).health()["status"] == "alive"  # no key needed there

    client = connect(gateway, KEY)
    with pytest.raises(JobNotFound) as missing:
        client.result("no-such-job")
    assert missing.value.status == 404 and "\n" not in str(missing.value)
    with pytest.raises(RequestRefused, match="dpi") as refused:
        client.parse(PDF, dpi=1)  # checked before uploading
    assert refused.value.status is None
    with pytest.raises(RequestRefused, match="webhook") as refused:
        client.submit(PDF, webhook="ftp://example.com/hook")  # refused by the gateway
    assert refused.value.status in (400, 422)
    with pytest.raises(NotADocument, match="no such file"):
        client.parse(PDF.with_name("missing.pdf"))

    with pytest.raises(GatewayUnavailable, match="cannot reach the gateway"):
        connect(f"http://127.0.0.1:{free_port()}").health()


def test_a_busy_gateway_says_so(stuck_gateway: str, connect: Callable[..., Any]) -> None:
    client = connect(stuck_gateway)
    assert client.health()["status"] == "alive"
    assert client.ready() is False
    waiting = client.submit(PDF, pages="1-3")  # 3 of the queue's 4 places, never read
    try:
        with pytest.raises(GatewayBusy, match="queue is full") as full:
            client.submit(PDF, pages="1-2")
        assert (full.value.status, full.value.code, full.value.retry_after) == (
            503, "queue_full", 30,
        )  # fmt: skip
        with pytest.raises(RequestRefused, match="more than the queue holds"):
            client.submit(PDF)  # 5 pages: waiting would never help
        with pytest.raises(GatewayBusy, match="the job goes on") as late:
            client.parse(PDF, pages="1")
        assert (late.value.status, late.value.code) == (504, "timeout")
        client.delete(re.search(r"/v1/jobs/([\w-]+)", str(late.value))[1])
        with pytest.raises(WaitTimeout):  # keep-alives let it look at its clock
            client.wait(waiting.id, timeout=1.0)
    finally:
        client.delete(waiting.id)


class DropEvents:
    """The real transport, except that event streams fail: cut after their first event
    (the first ``cut`` streams), or refused with an HTML 500."""

    def __init__(self, cut: int = 0, refuse: bool = False) -> None:
        self.cut = cut
        self.refuse = refuse
        self.streams = 0
        outer = self

        class Sync(httpx.BaseTransport):
            inner = httpx.HTTPTransport()

            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if outer.refuse and request.url.path.endswith("/events"):
                    return httpx.Response(500, text="<html>Internal Server Error</html>")
                response = self.inner.handle_request(request)
                if not outer._cutting(request):
                    return response
                return httpx.Response(200, stream=_CutSync(response), headers=response.headers)

        class Async(httpx.AsyncBaseTransport):
            inner = httpx.AsyncHTTPTransport()

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if outer.refuse and request.url.path.endswith("/events"):
                    return httpx.Response(500, text="<html>Internal Server Error</html>")
                response = await self.inner.handle_async_request(request)
                if not outer._cutting(request):
                    return response
                return httpx.Response(200, stream=_CutAsync(response), headers=response.headers)

        self.sync = Sync()
        self.asynchronous = Async()

    def _cutting(self, request: httpx.Request) -> bool:
        if not request.url.path.endswith("/events"):
            return False
        self.streams += 1
        return self.streams <= self.cut


class _CutSync(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        seen = b""
        for chunk in self.response.stream:  # type: ignore[union-attr]
            seen += chunk
            if b"\n\n" in seen:
                yield seen[: seen.index(b"\n\n") + 2]
                break
        self.response.close()
        raise httpx.ReadError("connection cut")


class _CutAsync(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def __aiter__(self) -> Any:
        seen = b""
        async for chunk in self.response.stream:  # type: ignore[union-attr]
            seen += chunk
            if b"\n\n" in seen:
                yield seen[: seen.index(b"\n\n") + 2]
                break
        await self.response.aclose()
        raise httpx.ReadError("connection cut")


def test_wait_survives_a_dropped_stream(gateway: str, connect: Callable[..., Any]) -> None:
    faults = DropEvents(cut=1)
    client = connect(gateway, KEY, transport=faults)
    job = client.submit(PDF, pages="1-3")
    events: list[dict[str, Any]] = []
    assert client.wait(job.id, timeout=30, on_progress=events.append).state == "done"
    assert sorted(e["page"] for e in events) == [1, 2, 3]  # the replay adds no repeats
    assert faults.streams >= 2
    faults.cut = faults.streams + 1
    with pytest.raises(GatewayUnavailable):
        list(client.events(job.id))  # the public iterator reports the drop
    client.delete(job.id)


def test_wait_polls_when_the_stream_is_refused(gateway: str, connect: Callable[..., Any]) -> None:
    faults = DropEvents(refuse=True)
    client = connect(gateway, KEY, transport=faults)
    job = client.submit(PDF, pages="1")
    assert client.wait(job.id, timeout=30, on_progress=lambda event: None).state == "done"
    with pytest.raises(GatewayError) as caught:
        list(client.events(job.id))
    assert (caught.value.status, caught.value.code) == (500, "http_error")
    client.delete(job.id)


def test_async_client_as_a_context_manager(gateway: str) -> None:
    async def go() -> list[int]:
        pages: list[int] = []

        async def on_progress(event: dict[str, Any]) -> None:
            pages.append(event["page"])

        async with AsyncClient(gateway, KEY) as client:
            job = await client.submit(PDF, pages="1-2")
            assert (await client.wait(job.id, on_progress=on_progress)).state == "done"
            await client.delete(job.id)
        return sorted(pages)

    assert asyncio.run(go()) == [1, 2]
    with Client(gateway, KEY) as client:
        assert client.ready()


TWINS = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}


def _public(cls: type) -> dict[str, inspect.Signature]:
    """Public methods and the dunders that pair up, under the async twin's names."""
    shown = {"__init__", *TWINS, *TWINS.values()}
    return {
        TWINS.get(name, name): inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") or name in shown
    }


def test_client_and_async_client_have_the_same_methods() -> None:
    sync, asynchronous = _public(Client), _public(AsyncClient)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        twin = asynchronous[name]
        assert [(p.name, p.kind, p.default) for p in signature.parameters.values()] == [
            (p.name, p.kind, p.default) for p in twin.parameters.values()
        ], name
        if name != "events":  # Iterator and AsyncIterator
            assert signature.return_annotation == twin.return_annotation, name
    assert inspect.isasyncgenfunction(AsyncClient.events)
    assert all(
        inspect.iscoroutinefunction(getattr(AsyncClient, name))
        for name in asynchronous
        if name not in ("__init__", "events")
    )
