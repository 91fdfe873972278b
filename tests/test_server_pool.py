"""Several model servers as one engine (``--server A,B``): requests spread by load, a server
that goes down mid-run loses no page, and one that is down from the start is left out."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from PIL import Image

from dotsocr.engines.pool import ServerPool, server_urls
from dotsocr.errors import EngineUnavailable
from dotsocr.models import get_profile
from test_ocr_cli import DATA, dotsocr
from vllm_support.standin import LAYOUT_ANSWER, StandIn, start

PROFILE = get_profile("dots.ocr")


@pytest.fixture
def servers():
    """Two stand-in replicas on loopback."""
    states = [StandIn(latency=0.05, capacity=4), StandIn(latency=0.05, capacity=4)]
    running = [start(state) for state in states]
    yield states
    for server in running:
        server.shutdown()
        server.server_close()


def _request():
    image = Image.new("RGB", (600, 800), "white")
    page = PROFILE.prepare(image, 600, 800)
    return page, PROFILE.build_request(page, "layout_all", max_tokens=1024)


async def _read(pool: ServerPool, pages: int, on_answer=None) -> list[str]:
    page, request = _request()

    async def one() -> str:
        answer = await pool.infer(page, request)
        if on_answer:
            on_answer()
        return answer.text

    return await asyncio.gather(*(one() for _ in range(pages)))


def test_urls_are_comma_separated() -> None:
    assert server_urls(" http://a:8000, http://b:8000 ,") == ["http://a:8000", "http://b:8000"]


def test_requests_spread_over_the_servers(servers) -> None:
    async def go():
        async with ServerPool([s.url for s in servers]) as pool:
            assert pool.info.model == "model"
            return await _read(pool, 40)

    assert asyncio.run(go()) == [LAYOUT_ANSWER] * 40
    counts = [len(s.requests) for s in servers]
    assert sum(counts) == 40 and min(counts) >= 10, counts  # least busy first: both share


def test_a_server_going_down_mid_run_loses_no_page(servers) -> None:
    """After ten answers the second server drops every connection, the requests it held
    included: those, and every page after, are answered by the first, each once."""
    second = servers[1]
    answered = 0

    def count() -> None:
        nonlocal answered
        answered += 1
        if answered == 10:
            second.down = True

    async def go():
        async with ServerPool([s.url for s in servers]) as pool:
            return await _read(pool, 60, count)

    assert asyncio.run(go()) == [LAYOUT_ANSWER] * 60
    answered = [len(s.latencies) for s in servers]  # requests each server answered
    assert sum(answered) == 60 and answered[1] < 30, answered
    assert len(second.requests) > answered[1]  # it lost some, which the first answered


def test_a_server_down_from_the_start_is_left_out(servers) -> None:
    first, second = servers
    second.down = True

    async def go():
        async with ServerPool([s.url for s in servers]) as pool:
            started = time.monotonic()
            texts = await _read(pool, 10)
            return texts, time.monotonic() - started

    texts, _ = asyncio.run(go())
    assert texts == [LAYOUT_ANSWER] * 10 and len(first.requests) == 10


def test_no_server_answering_is_one_error_naming_each(servers) -> None:
    for state in servers:
        state.down = True

    async def go():
        async with ServerPool([s.url for s in servers], server_timeout=0):
            pass

    with pytest.raises(EngineUnavailable, match="no answer from the server at") as info:
        asyncio.run(go())
    for state in servers:
        assert state.url in str(info.value)


def test_ocr_reads_with_several_servers(servers, tmp_path) -> None:
    urls = ",".join(s.url for s in servers)
    result = dotsocr("ocr", DATA / "multi_page.pdf", "--dpi", "72", "--server", urls,
                     "--engine", "server", "-o", tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    pages = json.loads(next(tmp_path.glob("*.json")).read_text())["pages"]
    assert [p["status"] for p in pages] == ["ok"] * 5
    assert all(s.requests for s in servers)  # both read some of the book


def test_the_gateway_reads_with_several_servers(servers, tmp_path) -> None:
    from gateway_support import SAMPLE, running_gateway, upload, wait_job

    urls = ",".join(s.url for s in servers)
    with running_gateway(tmp_path / "data", "--server", urls, ready=True) as gateway:
        client = gateway.client()
        job = client.post("/v1/jobs", files=[upload(SAMPLE)], data={"dpi": "72"}).json()
        servers[1].down = True  # one replica dies as the job starts: no page is lost
        final = wait_job(client, job["id"])
    assert final["state"] == "done" and final["pages"]["done"] == 5
