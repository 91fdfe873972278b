"""The gateway's cost over the library, against the stand-in server.

Overhead: one page read through `dotsocr gateway` (POST /v1/parse, one request at a time)
against the same page through the library in this process (open, render, the pipeline's
ladder with OpenAIEngine), both against a stand-in that answers at once; p50 and p99 of
each and their difference, which is what the gateway adds: HTTP, the upload, the job
store, the queue and rendering the result. Throughput: one job of many pages (POST
/v1/jobs) against a stand-in with capacity C and latency L, which can do at most C/L
pages/s; the gateway should come close to that. Page views: what the web page waits for
when a person opens a page of a finished job: its view (JSON, Markdown, HTML) and its image
(JPEG, full size and 800 pixels wide), p50 and p99, and the JPEG's size against a PNG.

    .venv/bin/python bench/gateway.py [--requests 100] [--pages 300] [--capacity 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pikepdf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vllm_support.documents import book  # noqa: E402
from vllm_support.server import free_port  # noqa: E402
from vllm_support.standin import StandIn, start  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "multi_page.pdf"
WARM_UP = 5


def one_page() -> bytes:
    with pikepdf.open(SAMPLE) as source, pikepdf.new() as pdf:
        pdf.pages.append(source.pages[0])
        buffer = io.BytesIO()
        pdf.save(buffer)
    return buffer.getvalue()


class Gateway:
    """`dotsocr gateway` as a child, against ``server``, until closed."""

    def __init__(self, server: str, folder: Path, max_in_flight: int) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOTSOCR_")}
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "gateway.log"
        with self.log.open("wb") as sink:
            self.child = subprocess.Popen(
                [
                    sys.executable, "-m", "dotsocr", "gateway", "--port", self.url.rsplit(":")[-1],
                    "--engine", "server", "--server", server, "--data-dir", str(folder / "data"),
                    "--max-in-flight", str(max_in_flight), "--log-level", "warning",
                ],
                stdout=subprocess.DEVNULL, stderr=sink, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                sys.exit(f"the gateway exited:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.close()
        sys.exit(f"the gateway was not ready in 60 s:\n{self.log.read_text()[-2000:]}")

    def close(self) -> None:
        self.child.terminate()
        try:
            self.child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


def percentiles(seconds: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return statistics.median(seconds), cuts[98]


def through_gateway(gateway: Gateway, page: bytes, requests: int) -> list[float]:
    times = []
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        for i in range(WARM_UP + requests):
            started = time.perf_counter()
            response = client.post("/v1/parse", files={"files": ("page.pdf", page)})
            elapsed = time.perf_counter() - started
            if response.status_code != 200 or response.json()["job"]["pages"]["done"] != 1:
                sys.exit(f"the gateway answered {response.status_code}: {response.text[:500]}")
            if i >= WARM_UP:
                times.append(elapsed)
    return times


async def direct(server: str, page: bytes, requests: int) -> list[float]:
    """The library's own path for the page, as the gateway takes it: open, render, ladder."""
    from dotsocr.document import DocumentOptions, open_document
    from dotsocr.engines.openai import OpenAIEngine
    from dotsocr.models import get_profile
    from dotsocr.pipeline import Pipeline, PipelineOptions

    profile = get_profile("dots.ocr")
    options = DocumentOptions(max_pixels=profile.max_pixels)
    times = []
    async with OpenAIEngine(server, concurrency=1) as engine:
        pipeline = Pipeline(engine, profile, PipelineOptions(keep_images=False))
        for i in range(WARM_UP + requests):
            started = time.perf_counter()
            with open_document(page, options, name="page.pdf") as document:
                rendered = next(document.pages())
            result = await pipeline.read_page(rendered)
            elapsed = time.perf_counter() - started
            if result.status.value != "ok":
                sys.exit(f"the direct read failed: {result.error}")
            if i >= WARM_UP:
                times.append(elapsed)
    return times


def overhead(folder: Path, requests: int) -> None:
    state = StandIn(capacity=64, latency=0.0, max_model_len=32768, record=False)
    server = start(state)
    page = one_page()
    gateway = Gateway(state.url, folder / "overhead", max_in_flight=16)
    try:
        via = through_gateway(gateway, page, requests)
    finally:
        gateway.close()
    lib = asyncio.run(direct(state.url, page, requests))
    server.shutdown()
    (g50, g99), (d50, d99) = percentiles(via), percentiles(lib)
    print(f"one page, {requests} requests one at a time, stand-in latency 0:")
    print(f"  gateway /v1/parse   p50 {g50 * 1000:7.1f} ms   p99 {g99 * 1000:7.1f} ms")
    print(f"  library, direct     p50 {d50 * 1000:7.1f} ms   p99 {d99 * 1000:7.1f} ms")
    print(
        f"  gateway overhead    p50 {(g50 - d50) * 1000:+7.1f} ms   p99 {(g99 - d99) * 1000:+7.1f} "
        f"ms   ({g50 / d50:.2f}x the direct p50)"
    )


def large_job(folder: Path, pages: int, capacity: int, latency: float) -> None:
    ideal = capacity / latency
    state = StandIn(capacity=capacity, latency=latency, max_model_len=32768, record=False)
    server = start(state)
    pdf = book(pages, folder).read_bytes()
    in_flight = capacity * 2  # as bench/throughput.py gives the CLI: the server's queue stays fed
    gateway = Gateway(state.url, folder / "job", max_in_flight=in_flight)
    try:
        with httpx.Client(base_url=gateway.url, timeout=120) as client:
            started = time.perf_counter()
            submitted = client.post("/v1/jobs", files={"files": ("book.pdf", pdf)})
            if submitted.status_code != 202:
                sys.exit(f"the gateway answered {submitted.status_code}: {submitted.text[:500]}")
            accepted = time.perf_counter() - started
            status = submitted.json()
            while status["state"] in ("queued", "running"):
                time.sleep(0.05)
                status = client.get(f"/v1/jobs/{status['id']}").json()
            seconds = time.perf_counter() - started
            failures = _failures(client, status["id"]) if status["pages"]["failed"] else {}
    finally:
        gateway.close()
        server.shutdown()
    done = status["pages"]["done"]
    rate = done / seconds
    library = cli_rate(folder, pages, capacity, latency, in_flight)
    print(
        f"one job of {pages} pages ({len(pdf) / 1e6:.1f} MB), stand-in capacity {capacity}, "
        f"latency {latency:g} s, gateway --max-in-flight {in_flight}:"
    )
    print(
        f"  {status['state']}: {done} pages done, {status['pages']['failed']} failed; accepted in "
        f"{accepted * 1000:.0f} ms; {seconds:.1f} s to the end"
    )
    for error, count in sorted(failures.items(), key=lambda item: -item[1])[:3]:
        print(f"  {count} pages failed: {error}")
    print(
        f"  {rate:.2f} pages/s = {rate / ideal:.2f} of ideal {ideal:.1f}/s; most in flight at "
        f"the stand-in: {state.most_in_flight}"
    )
    print(
        f"  dotsocr ocr --server on the same book: {library:.2f} pages/s; gateway / CLI "
        f"{rate / library:.2f} (both render and encode every page on this machine's "
        f"{os.cpu_count()} CPUs)"
    )


def _failures(client: httpx.Client, job_id: str) -> dict[str, int]:
    """Why pages failed, from the job's layout JSON: reason -> pages."""
    counts: dict[str, int] = {}
    for document in client.get(f"/v1/jobs/{job_id}/result").json()["documents"]:
        for page in document["pages"]:
            if page.get("status") == "failed":
                reason = str(page.get("error"))[:160]
                counts[reason] = counts.get(reason, 0) + 1
    return counts


def cli_rate(folder: Path, pages: int, capacity: int, latency: float, concurrency: int) -> float:
    """The library's own pages/s for the book, as bench/throughput.py runs it."""
    state = StandIn(capacity=capacity, latency=latency, max_model_len=32768, record=False)
    server = start(state)
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable, "-m", "dotsocr", "ocr", str(book(pages, folder)),
                "--server", state.url, "--concurrency", str(concurrency),
                "-o", str(folder / "cli"), "-f", "json",
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return pages / (time.perf_counter() - started)
    finally:
        server.shutdown()


def page_views(folder: Path, requests: int) -> None:
    from PIL import Image

    state = StandIn(capacity=64, latency=0.0, max_model_len=32768, record=False)
    server = start(state)
    gateway = Gateway(state.url, folder / "views", max_in_flight=8)
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            files = {"files": (SAMPLE.name, SAMPLE.read_bytes())}
            job = client.post("/v1/jobs", files=files).json()["id"]
            while client.get(f"/v1/jobs/{job}").json()["state"] not in ("done", "failed"):
                time.sleep(0.1)
            base = f"/v1/jobs/{job}/files/0/pages"
            timed: dict[str, list[float]] = {"view": [], "image": [], "image 800 px": []}
            sizes: dict[str, int] = {}
            for i in range(WARM_UP + requests):
                page = i % 5 + 1
                for name, path, params in (
                    ("view", f"{base}/{page}", None),
                    ("image", f"{base}/{page}/image", None),
                    ("image 800 px", f"{base}/{page}/image", {"width": "800"}),
                ):
                    started = time.perf_counter()
                    response = client.get(path, params=params)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        sys.exit(f"{path} answered {response.status_code}: {response.text[:300]}")
                    sizes[name] = len(response.content)
                    if i >= WARM_UP:
                        timed[name].append(elapsed)
            image = client.get(f"{base}/5/image").content
        png = io.BytesIO()
        Image.open(io.BytesIO(image)).save(png, "PNG", optimize=True)
    finally:
        gateway.close()
        server.shutdown()
    print(f"page views of a finished 5-page job (200 DPI), {requests} of each, one at a time:")
    for name, seconds in timed.items():
        p50, p99 = percentiles(seconds)
        print(
            f"  {name:13s} p50 {p50 * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"
            f"   {sizes[name] / 1024:6.0f} KiB"
        )
    ratio = len(image) / len(png.getvalue())
    print(f"  page 5 as JPEG {len(image) / 1024:.0f} KiB = {ratio:.2f} of the same pixels as PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overhead(Path(tmp), args.requests)
        large_job(Path(tmp), args.pages, args.capacity, args.latency)
        page_views(Path(tmp), args.requests)


if __name__ == "__main__":
    main()
