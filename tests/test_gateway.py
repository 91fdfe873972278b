"""The REST gateway end to end: `dotsocr gateway` as a real process, spoken to over HTTP.

Engines: the embedded CPU engine (real text from tests/data/multi_page.pdf), the stand-in
vLLM server (latency, capacity and faults on demand) and, marked ``vllm``, the real vLLM
tier. Gateways that tests can share are started once per module; every wait polls with
a deadline and nothing asserts on wall-clock time.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import subprocess
import sys
import threading
import zipfile
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from dotsocr.models import get_profile
from gateway_support import (
    SAMPLE,
    TITLE,
    Gateway,
    assert_error,
    events,
    free_port,
    metrics,
    receiver,
    start_gateway,
    status,
    upload,
    wait_for,
    wait_job,
)
from vllm_support.documents import book
from vllm_support.standin import StandIn
from vllm_support.standin import start as start_standin

KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
BAD_FILES = {  # corpus file -> words its error must carry
    "robustness/derived/zero_byte.pdf": "empty",
    "robustness/derived/html_error_page_named.pdf": "HTML",
    "pdfjs/test/pdfs/issue6010_1.pdf": "encrypted",
    "robustness/derived/huge_20000x20000_1bit.png": "Mpx",
}
PHOTOTEST = "tesseract_test/testing/phototest.tif"  # one page: "This is a lot of 12 point text"


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> Iterator:
    """Start gateways for this module; all are stopped at its end."""
    started: list[Gateway] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Gateway:
        gateway = start_gateway(tmp_path_factory.mktemp(name) / "data", *args, env=env, ready=True)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@contextmanager
def running_standin() -> Iterator[StandIn]:
    state = StandIn()
    server = start_standin(state)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def paced(standin: StandIn, latency: float, slots: int) -> Iterator[StandIn]:
    """The stand-in answers after ``latency`` seconds, ``slots`` requests at a time."""
    standin.latency, standin.slots = latency, threading.Semaphore(slots)
    try:
        yield standin
    finally:
        standin.latency, standin.slots = 0.0, threading.Semaphore(standin.capacity)


@pytest.fixture(scope="module")
def cpu(launch) -> Gateway:
    """Default settings, the embedded CPU engine."""
    return launch("cpu", "--engine", "cpu", "--max-in-flight", "2")


@pytest.fixture(scope="module")
def keyed_standin() -> Iterator[StandIn]:
    with running_standin() as state:
        yield state


@pytest.fixture(scope="module")
def keyed(launch, keyed_standin) -> Gateway:
    """Two API keys, URL inputs on, two pages in flight to the stand-in."""
    return launch(
        "keyed", "--server", keyed_standin.url, "--api-key", KEY_A, "--api-key", KEY_B,
        "--max-in-flight", "2", env={"DOTSOCR_ALLOW_URLS": "true"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def limited_standin() -> Iterator[StandIn]:
    with running_standin() as state:
        yield state


@pytest.fixture(scope="module")
def limited(launch, limited_standin) -> Gateway:
    """Small limits, one page in flight to the stand-in."""
    return launch(
        "limited", "--server", limited_standin.url, "--max-in-flight", "1",
        env={
            "DOTSOCR_MAX_UPLOAD_BYTES": "300000",
            "DOTSOCR_MAX_PAGES_PER_JOB": "4",
            "DOTSOCR_MAX_QUEUED_PAGES": "6",
            "DOTSOCR_SYNC_TIMEOUT": "1",
        },
    )  # fmt: skip


def submit(client: httpx.Client, files: list, **fields: str) -> dict:
    response = client.post("/v1/jobs", files=files, data=fields)
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    return body


def page_events(stream: list[tuple[str, dict]]) -> list[tuple[int, int]]:
    return [(data["file"], data["page"]) for name, data in stream if name == "page"]


# The embedded CPU engine: real text.
def test_health_ready_and_unknown_paths(cpu):
    client = cpu.client()
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "alive"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/v1/jobs/no-such-job"), 404, "not_found")
    assert_error(client.get("/v1/jobs/no-such-job/result"), 404, "not_found")
    assert_error(client.delete("/v1/jobs/no-such-job"), 404, "not_found")


def test_sync_parse_answers_markdown_and_json(cpu):
    client = cpu.client()
    md = client.post(
        "/v1/parse", params={"format": "md"}, files=[upload(SAMPLE)], data={"pages": "1"}
    )
    assert md.status_code == 200, md.text
    assert md.headers["content-type"].startswith("text/markdown")
    assert TITLE in md.text

    response = client.post(
        "/v1/parse", files=[upload(SAMPLE)], data={"pages": "1", "headers_footers": "true"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    job = body["job"]
    assert job["state"] == "done" and job["error"] is None
    assert job["pages"] == {"total": 1, "done": 1, "failed": 0, "pending": 0}
    assert job["files"] == [
        {"index": 0, "name": "multi_page.pdf", "pages": 1, "selected": "1", "error": None}
    ]
    assert job["finished"] >= job["started"] >= job["created"]
    assert TITLE in body["markdown"]
    [document] = body["documents"]
    [page] = document["pages"]
    assert page["index"] == 0 and page["status"] == "ok"
    assert any(TITLE in (cell.get("text") or "") for cell in page["cells"])
    # The job stays readable at its URL.
    assert status(client, job["id"])["state"] == "done"


def test_json_body_with_base64_files(cpu):
    client = cpu.client()
    encoded = base64.b64encode(SAMPLE.read_bytes()).decode()
    body = {"files": [{"name": "report.pdf", "base64": encoded}], "pages": "1", "task": "ocr"}
    response = client.post("/v1/parse", json=body)
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["state"] == "done" and job["files"][0]["name"] == "report.pdf"
    assert TITLE in response.json()["markdown"]
    md = client.post("/v1/parse", params={"format": "md"}, json=body)
    assert md.status_code == 200 and TITLE in md.text


def test_bad_documents_become_file_errors(cpu, corpus):
    """Unreadable files fail the job with a reason per file; the server stays up."""
    client = cpu.client()
    files = [upload(corpus / path) for path in BAD_FILES]
    response = client.post("/v1/parse", files=files)
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["state"] == "failed" and job["error"] == "no file could be read"
    assert job["pages"]["total"] == 0
    for file, words in zip(job["files"], BAD_FILES.values(), strict=True):
        assert file["pages"] == 0 and words in file["error"], file
    assert client.get("/health").status_code == 200


def test_a_page_the_engine_cannot_read_fails_alone(cpu):
    """A blank page makes Tesseract raise; that page fails and its job still ends."""
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(blank, "PNG")
    files = [("files", ("blank.png", blank.getvalue())), upload(SAMPLE)]
    response = cpu.client().post("/v1/parse", files=files, data={"pages": "1"})
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["state"] == "done" and job["pages"]["pending"] == 0 and job["pages"]["done"] >= 1
    assert TITLE in response.json()["markdown"]


def test_job_events_results_and_delete(cpu, corpus):
    client = cpu.client()
    empty = corpus / "robustness/derived/zero_byte.pdf"
    files = [upload(SAMPLE), upload(corpus / PHOTOTEST), upload(empty)]
    created = submit(client, files)
    job_id = created["id"]
    assert created["state"] in ("queued", "running")
    progress = created["pages"]
    assert progress["total"] == 6
    assert progress["done"] + progress["failed"] + progress["pending"] == 6
    assert [f["pages"] for f in created["files"]] == [5, 1, 0]
    assert "empty" in created["files"][2]["error"]
    assert created["links"] == {
        "self": f"/v1/jobs/{job_id}",
        "events": f"/v1/jobs/{job_id}/events",
        "result": f"/v1/jobs/{job_id}/result",
    }

    stream = events(client, f"/v1/jobs/{job_id}/events")
    assert sorted(page_events(stream)) == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 1)]
    assert stream[-1] == ("done", {"event": "done", "state": "done"})
    assert [name for name, _ in stream].count("done") == 1
    last_page = [data for name, data in stream if name == "page"][-1]
    assert (last_page["done"], last_page["total"]) == (6, 6)
    # Once done, the stream replays every page, then done.
    again = events(client, f"/v1/jobs/{job_id}/events")
    assert sorted(page_events(again)) == sorted(page_events(stream))
    assert again[-1][0] == "done"

    final = status(client, job_id)
    assert final["state"] == "done" and final["queue_position"] is None
    assert final["pages"] == {"total": 6, "done": 6, "failed": 0, "pending": 0}

    result = client.get(f"/v1/jobs/{job_id}/result").json()
    assert result["job"]["id"] == job_id
    indexes = [[page["index"] for page in doc["pages"]] for doc in result["documents"]]
    assert indexes == [[0, 1, 2, 3, 4], [0], []]
    md = client.get(f"/v1/jobs/{job_id}/result", params={"format": "md"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert TITLE in md.text and "<!-- phototest.tif -->" in md.text
    assert "12 point text" in md.text

    archive = client.get(f"/v1/jobs/{job_id}/result", params={"format": "zip"})
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = sorted(zipped.namelist())
        stems = sorted({name.rsplit(".", 1)[0] for name in names})
        assert len(stems) == 3 and names == sorted(
            f"{s}.{x}" for s in stems for x in ("json", "md")
        )
        first = next(s for s in stems if s.startswith("00-"))
        assert TITLE in zipped.read(f"{first}.md").decode()
        assert len(json.loads(zipped.read(f"{first}.json"))["pages"]) == 5

    deleted = client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 204 and not deleted.content
    for path in ("", "/events", "/result"):
        assert_error(client.get(f"/v1/jobs/{job_id}{path}"), 404, "not_found")
    assert_error(client.delete(f"/v1/jobs/{job_id}"), 404, "not_found")
    assert not (cpu.data_dir / "jobs" / job_id).exists()


def test_metrics(cpu):
    client = cpu.client()
    assert client.post("/v1/parse", files=[upload(SAMPLE)], data={"pages": "2"}).status_code == 200
    client.get("/v1/jobs/no-such-job")
    seen = metrics(client)

    def value(name: str, **labels: str) -> float:
        return seen.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("dotsocr_http_requests_total", route="/v1/parse", status="200") >= 1
    assert value("dotsocr_http_requests_total", route="/v1/jobs/{job_id}", status="404") >= 1
    assert value("dotsocr_jobs_total", state="queued") >= 1
    assert value("dotsocr_jobs_total", state="done") >= 1
    assert value("dotsocr_jobs_current", state="done") >= 1
    states = {labels for name, labels in seen if name == "dotsocr_jobs_current"}
    assert {dict(labels)["state"] for labels in states} >= {"queued", "running", "cancelled"}
    assert value("dotsocr_pages_total", status="ok") >= 1
    assert value("dotsocr_page_seconds_count") >= 1
    assert value("dotsocr_page_seconds_bucket", le="+Inf") == value("dotsocr_page_seconds_count")
    assert value("dotsocr_page_seconds_sum") > 0
    assert ("dotsocr_queue_pages", ()) in seen and value("dotsocr_queue_pages") == 0
    assert ("dotsocr_in_flight_pages", ()) in seen and value("dotsocr_in_flight_pages") == 0


# Readiness.
def test_ready_is_503_while_the_model_server_is_unreachable(tmp_path):
    port = free_port()
    dead = f"http://127.0.0.1:{port}"
    gateway = start_gateway(tmp_path / "data", "--server", dead, "--engine", "server")
    state, server = StandIn(), None
    try:
        client = gateway.client()
        assert client.get("/health").status_code == 200
        response = client.get("/ready")
        message = assert_error(response, 503, "not_ready")
        assert response.headers["retry-after"]
        assert "connection refused" in message and dead not in message  # it may be internal
        # Jobs are still taken, and wait for the server.
        created = submit(client, [upload(SAMPLE)], pages="1")
        assert created["state"] == "queued" and created["pages"]["pending"] == 1
        assert status(client, created["id"])["state"] in ("queued", "running")
        assert_error(client.get("/ready"), 503, "not_ready")
        server = start_standin(state, port=port)  # the server comes up: the page is read
        done = wait_job(client, created["id"], timeout=120)
        assert done["state"] == "done" and done["pages"]["done"] == 1
        assert client.get("/ready").status_code == 200
    finally:
        gateway.stop()
        if server:
            server.shutdown()
            server.server_close()


def test_a_page_the_server_fails_names_no_server_url(limited, limited_standin):
    limited_standin.faults.extend(["500"] * 5)  # every retry of the one page
    client = limited.client()
    created = submit(client, [upload(SAMPLE)], pages="1")
    done = wait_job(client, created["id"])
    result = client.get(f"/v1/jobs/{created['id']}/result").text
    assert done["pages"]["failed"] == 1 and "HTTP 500: injected fault" in result
    assert limited_standin.url not in result and "the model server" in result


# The stand-in: capacity and latency on demand.
def test_api_keys(keyed):
    anonymous, a, b = keyed.client(), keyed.client(KEY_A), keyed.client(KEY_B)
    wrong = keyed.client("not-a-key")
    for client in (anonymous, wrong):
        for response in (
            client.post("/v1/parse", files=[upload(SAMPLE)]),
            client.post("/v1/jobs", files=[upload(SAMPLE)]),
            client.get("/v1/jobs/whatever"),
        ):
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
    basic = anonymous.get("/v1/jobs/x", headers={"Authorization": f"Basic {KEY_A}"})
    assert_error(basic, 401, "unauthorized")
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").json()["status"] == "ready"  # the stand-in answers

    job_id = submit(a, [upload(SAMPLE)], pages="1")["id"]
    for path in ("", "/events", "/result"):
        assert_error(b.get(f"/v1/jobs/{job_id}{path}"), 404, "not_found")
    assert_error(b.delete(f"/v1/jobs/{job_id}"), 404, "not_found")
    assert wait_job(a, job_id)["state"] == "done"
    assert events(a, f"/v1/jobs/{job_id}/events")[-1][0] == "done"
    assert a.get(f"/v1/jobs/{job_id}/result").status_code == 200
    assert a.delete(f"/v1/jobs/{job_id}").status_code == 204


def test_queue_position_progress_and_partial_results(keyed, keyed_standin, tmp_path):
    a = keyed.client(KEY_A)
    with paced(keyed_standin, latency=0.3, slots=2):
        # Every stand-in page is the same, so it is all running furniture: keep it.
        first = submit(a, [upload(book(10, tmp_path))], headers_footers="true")
        second = submit(a, [upload(SAMPLE)])
        assert second["state"] == "queued" and isinstance(second["queue_position"], int)
        assert second["pages"] == {"total": 5, "done": 0, "failed": 0, "pending": 5}

        running = wait_job(a, first["id"], lambda s: s["pages"]["done"] >= 2, what="two pages done")
        assert running["state"] == "running" and running["started"] is not None
        partial = a.get(f"/v1/jobs/{first['id']}/result").json()
        pages = partial["documents"][0]["pages"]
        assert partial["job"]["state"] == "running"
        assert 2 <= len(pages) == partial["job"]["pages"]["done"] < 10
        assert "Stand-in" in a.get(f"/v1/jobs/{first['id']}/result?format=md").text

        for job in (first, second):
            done = wait_job(a, job["id"])
            assert done["state"] == "done" and done["pages"]["pending"] == 0
        result = a.get(f"/v1/jobs/{first['id']}/result").json()
        assert [p["index"] for p in result["documents"][0]["pages"]] == list(range(10))


def test_a_small_request_overtakes_a_large_job(keyed, keyed_standin, tmp_path):
    """Fair turns: a one-page request waits for a round of the others, not for 60 pages."""
    a, b = keyed.client(KEY_A), keyed.client(KEY_B)
    with paced(keyed_standin, latency=0.3, slots=2):
        big = submit(a, [upload(book(60, tmp_path))])["id"]
        wait_job(a, big, lambda s: s["state"] == "running", what="the big job to start")
        for client in (b, a):  # another key, then the big job's own key
            before = status(a, big)["pages"]
            small = client.post("/v1/parse", files=[upload(SAMPLE)], data={"pages": "1"})
            after = status(a, big)["pages"]
            assert small.status_code == 200, small.text
            assert small.json()["job"]["state"] == "done"
            assert after["pending"] >= 30, after  # most of the big job still waits
            assert after["done"] - before["done"] <= 10, (before, after)
        assert a.delete(f"/v1/jobs/{big}").status_code == 204


def test_urls_to_inside_addresses_are_refused(keyed):
    a = keyed.client(KEY_A)
    for url in (
        "http://127.0.0.1/report.pdf",
        f"http://127.0.0.1:{free_port()}/report.pdf",
        "http://10.0.0.1/report.pdf",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/report.pdf",
    ):
        response = a.post("/v1/jobs", json={"files": [{"url": url}]})
        assert_error(response, 400, "url_refused")


def test_webhooks_to_inside_addresses_are_refused(keyed):
    a = keyed.client(KEY_A)
    response = a.post(
        "/v1/jobs", files=[upload(SAMPLE)], data={"webhook": "http://127.0.0.1:9/hook"}
    )
    assert response.status_code == 400, response.text
    assert "127.0.0.1" in response.json()["error"]["message"]
    bad = a.post("/v1/jobs", files=[upload(SAMPLE)], data={"webhook": "ftp://example.org/x"})
    assert 400 <= bad.status_code < 500 and "webhook" in bad.json()["error"]["message"]


# Limits.
def test_uploads_over_the_size_limit_are_413(limited):
    client = limited.client()
    blob = b"%PDF-1.7\n" + bytes(400_000)
    refused = client.post("/v1/jobs", files=[("files", ("big.pdf", blob))])
    assert "0.29 MB" in assert_error(refused, 413, "too_large")
    body = {"files": [{"name": "big.pdf", "base64": base64.b64encode(blob).decode()}]}
    assert_error(client.post("/v1/parse", json=body), 413, "too_large")
    # Chunked, with no Content-Length to refuse it by: counted as it arrives.
    part = b'--cut\r\nContent-Disposition: form-data; name="files"; filename="big.pdf"\r\n\r\n'
    for kind, raw in (
        ("multipart/form-data; boundary=cut", part + blob + b"\r\n--cut--\r\n"),
        ("application/json", json.dumps(body).encode()),
    ):
        chunks = (raw[i : i + 65536] for i in range(0, len(raw), 65536))
        chunked = client.post("/v1/jobs", content=chunks, headers={"content-type": kind})
        assert "content-length" not in chunked.request.headers
        assert_error(chunked, 413, "too_large")


def test_files_under_the_size_limit_are_taken_both_ways(limited, tmp_path):
    """A file just under the limit fits as a multipart part and as base64 (4/3 its size)."""
    noise = Image.frombytes("RGB", (300, 300), random.Random(0).randbytes(300 * 300 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    png = buffer.getvalue()
    assert 250_000 < len(png) < 300_000
    client = limited.client()
    as_part = client.post("/v1/parse", files=[("files", ("noise.png", png))])
    assert as_part.status_code == 200, as_part.text
    encoded = base64.b64encode(png).decode()
    as_json = client.post("/v1/parse", json={"files": [{"name": "n.png", "base64": encoded}]})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["job"]["pages"]["done"] == 1


def test_jobs_over_the_page_limit_are_413(limited):
    client = limited.client()
    message = assert_error(client.post("/v1/jobs", files=[upload(SAMPLE)]), 413, "too_many_pages")
    assert "5 pages" in message and "4" in message
    fits = client.post("/v1/parse", files=[upload(SAMPLE)], data={"pages": "2-5"})
    assert fits.status_code == 200 and fits.json()["job"]["pages"]["done"] == 4


def test_a_full_queue_is_503_with_retry_after(limited, limited_standin):
    client = limited.client()
    with paced(limited_standin, latency=1.0, slots=1):
        first = submit(client, [upload(SAMPLE)], pages="1-4")  # 3 or 4 pages wait
        refused = client.post("/v1/jobs", files=[upload(SAMPLE)], data={"pages": "1-4"})
        assert "queue is full" in assert_error(refused, 503, "queue_full")
        assert int(refused.headers["retry-after"]) > 0
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
        room = submit(client, [upload(SAMPLE)], pages="1-4")  # room again
        assert client.delete(f"/v1/jobs/{room['id']}").status_code == 204


def test_sync_timeout_is_504_and_the_job_goes_on(limited, limited_standin):
    client = limited.client()
    with paced(limited_standin, latency=2.0, slots=1):
        response = client.post("/v1/parse", files=[upload(SAMPLE)], data={"pages": "1"})
        message = assert_error(response, 504, "timeout")
        match = re.search(r"/v1/jobs/([A-Za-z0-9_-]+)", message)
        assert match, message
        final = wait_job(client, match[1])
        assert final["state"] == "done" and final["pages"]["done"] == 1


def test_malformed_requests(limited):
    client = limited.client()
    pdf = [upload(SAMPLE)]
    raw = client.post("/v1/parse", content=b"%PDF", headers={"content-type": "application/pdf"})
    assert_error(raw, 415, "unsupported_media_type")
    assert_error(client.post("/v1/parse", content=b"hello"), 415, "unsupported_media_type")
    bad64 = {"files": [{"name": "a.pdf", "base64": "not base64!"}]}
    assert_error(client.post("/v1/parse", json=bad64), 400, "bad_base64")
    assert "colour" in assert_error(
        client.post("/v1/parse", files=pdf, data={"colour": "red"}), 422, "invalid"
    )
    for field, value in (("dpi", "5"), ("task", "poem"), ("pages", "one"), ("dpi", "x")):
        response = client.post("/v1/parse", files=pdf, data={field: value})
        assert field in assert_error(response, 422, "invalid")
    assert_error(client.post("/v1/parse", data={"pages": "1"}), 415, "unsupported_media_type")
    no_file = client.post("/v1/parse", files={"pages": (None, "1")})
    assert_error(no_file, 422, "invalid")
    assert_error(client.post("/v1/parse?format=pdf", files=pdf), 422, "invalid")
    for body in (
        {"files": []},
        {"files": [{"name": "a.pdf"}]},
        {"files": [{"base64": "JVBERg==", "url": "https://example.org/a.pdf"}]},
        {"files": [{"base64": "JVBERg=="}], "colour": "red"},
        {"files": [{"base64": "JVBERg=="}], "dpi": 5000},
    ):
        assert_error(client.post("/v1/jobs", json=body), 422, "invalid")
    broken = client.post("/v1/jobs", content=b"{not", headers={"content-type": "application/json"})
    assert_error(broken, 422, "invalid")
    urls = {"files": [{"url": "https://example.org/report.pdf"}]}
    assert "upload" in assert_error(client.post("/v1/jobs", json=urls), 400, "urls_off")


# Webhooks.
def test_webhooks_reach_the_receiver_once_and_are_retried(standin, tmp_path):
    env = {"DOTSOCR_ALLOW_PRIVATE_URLS": "true"}
    gateway = start_gateway(tmp_path / "data", "--server", standin.url, env=env, ready=True)
    try:
        with receiver() as hooks:
            hooks.failures["/flaky"] = deque([500, 503])
            client = gateway.client()
            steady = submit(client, [upload(SAMPLE)], pages="1", webhook=f"{hooks.url}/steady")
            encoded = base64.b64encode(SAMPLE.read_bytes()).decode()
            body = {"files": [{"base64": encoded}], "pages": "1-2", "webhook": f"{hooks.url}/flaky"}
            flaky = client.post("/v1/jobs", json=body)
            assert flaky.status_code == 202, flaky.text

            [sent] = wait_for(lambda: hooks.delivered("/flaky"), 60, "the third webhook try")
            assert sent["id"] == flaky.json()["id"] and sent["state"] == "done"
            assert sent["pages"] == {"total": 2, "done": 2, "failed": 0, "pending": 0}
            assert len(hooks.calls["/flaky"]) == 3  # two refused, then delivered
            [sent] = hooks.delivered("/steady")  # long after its job ended: still once
            assert sent["id"] == steady["id"] and sent["state"] == "done"
            assert len(hooks.calls["/steady"]) == 1
    finally:
        gateway.stop()


def test_a_job_over_its_time_limit_fails_and_says_so(standin, tmp_path):
    env = {"DOTSOCR_JOB_TIMEOUT": "1", "DOTSOCR_ALLOW_PRIVATE_URLS": "true"}
    gateway = start_gateway(
        tmp_path / "data", "--server", standin.url, "--max-in-flight", "1", env=env, ready=True
    )
    try:
        with paced(standin, latency=1.0, slots=1), receiver() as hooks:
            client = gateway.client()
            job_id = submit(client, [upload(SAMPLE)], webhook=f"{hooks.url}/hook")["id"]
            final = wait_job(client, job_id)
            assert final["state"] == "failed" and "time limit of 1 s" in final["error"]
            assert final["pages"]["pending"] > 0
            assert events(client, f"/v1/jobs/{job_id}/events")[-1] == (
                "done", {"event": "done", "state": "failed"},
            )  # fmt: skip
            [sent] = wait_for(lambda: hooks.delivered("/hook"), 30, "the webhook")
            assert sent["id"] == job_id and sent["state"] == "failed"
    finally:
        gateway.stop()


def test_a_second_gateway_on_the_same_folder_is_refused(tmp_path):
    gateway = start_gateway(tmp_path / "data", "--engine", "cpu")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "dotsocr", "gateway", "--engine", "cpu", "--port",
             str(free_port()), "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        gateway.stop()
    assert second.returncode == 2
    assert "in use by another gateway" in second.stderr and "Traceback" not in second.stderr


def test_results_are_removed_after_their_retention_time(tmp_path):
    env = {"DOTSOCR_RETENTION_HOURS": "0.0005"}  # 1.8 s
    gateway = start_gateway(tmp_path / "data", "--engine", "cpu", env=env, ready=True)
    try:
        client = gateway.client()
        job_id = submit(client, [upload(SAMPLE)], pages="1")["id"]
        assert wait_job(client, job_id)["state"] == "done"
        wait_for(lambda: client.get(f"/v1/jobs/{job_id}").status_code == 404 or None, 30, "cleanup")
        assert not (tmp_path / "data" / "jobs" / job_id).exists()
    finally:
        gateway.stop()


# Durability.
def test_a_killed_gateway_finishes_its_job_after_a_restart(standin, tmp_path):
    standin.latency, standin.slots = 0.2, threading.Semaphore(2)
    data = tmp_path / "data"
    args = ("--server", standin.url, "--max-in-flight", "2")
    pdf = book(50, tmp_path)
    gateway = start_gateway(data, *args, ready=True)
    try:
        job_id = submit(gateway.client(), [upload(pdf)])["id"]
        before = wait_job(
            gateway.client(), job_id, lambda s: s["pages"]["done"] >= 10, what="ten pages"
        )
        gateway.kill()  # kill -9 the whole group, pages in flight
    finally:
        gateway.stop()
    assert before["state"] == "running" and before["pages"]["pending"] > 0

    gateway = start_gateway(data, *args, ready=True)
    try:
        client = gateway.client()
        again = status(client, job_id)
        assert again["pages"]["total"] == 50 and again["pages"]["done"] >= before["pages"]["done"]
        final = wait_job(client, job_id, timeout=120)
        assert final["state"] == "done"
        assert final["pages"] == {"total": 50, "done": 50, "failed": 0, "pending": 0}
        result = client.get(f"/v1/jobs/{job_id}/result").json()
        [document] = result["documents"]
        assert sorted(page["index"] for page in document["pages"]) == list(range(50))
        stream = events(client, f"/v1/jobs/{job_id}/events")
        assert sorted(page for _, page in page_events(stream)) == list(range(1, 51))
    finally:
        gateway.stop()
    # Every page was read once, but for those in flight at the kill (at most 2).
    assert 50 <= len(standin.requests) <= 50 + 2


# The real vLLM tier.
@pytest.mark.vllm
def test_sync_parse_against_real_vllm(vllm_server, corpus, tmp_path):
    """Random weights: the words are meaningless, the path and the shapes are real."""
    gateway = start_gateway(
        tmp_path / "data", "--server", vllm_server.url, "--max-in-flight", "2",
        env={"DOTSOCR_SYNC_TIMEOUT": "600"}, ready=True,
    )  # fmt: skip
    try:
        client = gateway.client(timeout=660)
        path: Path = corpus / "dots_ocr/demo/demo_image2.png"
        response = client.post("/v1/parse", files=[upload(path)])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["job"]["pages"]["total"] == 1 and body["job"]["pages"]["pending"] == 0
        assert body["job"]["prompt_tokens"] > 0
        [page] = body["documents"][0]["pages"]
        assert page["status"] in ("ok", "repaired", "fallback", "failed")
        assert page["status"] != "failed" or "\n" not in (page["error"] or "")
    finally:
        gateway.stop()


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] + [d for c in children for d in descendants(int(c))]


def test_pages_prepared_by_worker_processes(launch):
    """With render processes (machines of 4+ cores have them by default), a job's pages
    are drawn and encoded in those processes and sent as they would be from the gateway's
    own: grey pages in one channel, every page at the model's size."""
    with running_standin() as state:
        gateway = launch(
            "pooled", "--server", state.url, env={"DOTSOCR_RENDER_PROCESSES": "2"}
        )  # fmt: skip
        client = gateway.client()
        done = wait_job(client, submit(client, [upload(SAMPLE)])["id"])
        assert done["state"] == "done" and done["pages"]["done"] == 5
        assert len(descendants(gateway.process.pid)) >= 3  # the fork server and two workers
        sizes, modes = set(), set()
        for request in state.requests:
            url = request["messages"][-1]["content"][0]["image_url"]["url"]
            image = Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))
            sizes.add(image.size)
            modes.add(image.mode)
        (size,) = sizes  # the sample's five pages are all A4
        assert get_profile("dots.ocr").model_size(*size) == size and modes == {"RGB", "L"}
