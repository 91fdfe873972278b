"""Pages/s with 1, 2 and 4 model-server replicas, as a ratio of linear scaling.

Each replica is a stand-in vLLM (tests/vllm_support/standin.py) that answers C requests at
once after L seconds, so N replicas can do at most N*C/L pages/s. ``dotsocr ocr`` reads one
book through them twice: with the replicas listed (``--server A,B,...``: our own
least-busy pool) and through the vLLM project's router (vllm-router, power of two).

    .venv/bin/python bench/scale.py [--pages 200] [--capacity 4] [--latency 0.25]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vllm_support.documents import book  # noqa: E402
from vllm_support.server import free_port  # noqa: E402
from vllm_support.standin import StandIn, start  # noqa: E402

ROUTER = shutil.which("vllm-router", path=str(Path(sys.executable).parent))


def read(pdf: Path, server: str, concurrency: int, out: Path) -> float:
    """Seconds ``dotsocr ocr`` takes over the book."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", str(pdf), "--dpi", "72", "--server", server,
         "--engine", "server", "--concurrency", str(concurrency), "-o", str(out), "--force"],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"dotsocr ocr failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def router(urls: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    policy = "power_of_two" if len(urls) > 1 else "round_robin"  # two needs two
    process = subprocess.Popen(
        [ROUTER, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
         "--worker-urls", *urls, "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    sys.exit("vllm-router did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pdf = book(args.pages, folder)
        print(
            f"{args.pages} pages; each replica answers {args.capacity} at once after "
            f"{args.latency:g} s ({args.capacity / args.latency:g} pages/s at most)"
        )
        print("replicas  ideal p/s   pool p/s  ratio   router p/s  ratio")
        for count in (1, 2, 4):
            states = [
                StandIn(capacity=args.capacity, latency=args.latency, record=False)
                for _ in range(count)
            ]
            servers = [start(state) for state in states]
            urls = [state.url for state in states]
            ideal = count * args.capacity / args.latency
            concurrency = 2 * count * args.capacity  # enough waiting to keep every slot busy
            try:
                pool = args.pages / read(pdf, ",".join(urls), concurrency, folder / "pool")
                routed = "      -      -"
                if ROUTER:
                    process, url = router(urls)
                    try:
                        rate = args.pages / read(pdf, url, concurrency, folder / "router")
                    finally:
                        process.terminate()
                        process.wait()
                    routed = f"{rate:12.1f}  {rate / ideal:5.2f}"
            finally:
                for server in servers:
                    server.shutdown()
                    server.server_close()
            print(f"{count:8d}  {ideal:9.1f}  {pool:9.1f}  {pool / ideal:5.2f} {routed}")


if __name__ == "__main__":
    main()
