"""Pipeline throughput against the stand-in server, and the CPU engine's pages/s.

A stand-in with capacity C (requests served at once) and latency L (seconds each) can
do at most C/L pages/s; `dotsocr ocr --server` over a 300-page and a 1000-page PDF
should reach 90% of that, with peak memory flat between the two (goal: under 500 MB).
`dotsocr monitor` watches the 1000-page run from the stand-in's /metrics (vLLM's names)
and its pages/s is printed beside the measured one.

    .venv/bin/python bench/throughput.py [--capacity 8] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vllm_support.documents import book  # noqa: E402
from vllm_support.standin import StandIn, start  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "multi_page.pdf"


def ocr(args: list[str]) -> tuple[float, float]:
    """Run `dotsocr ocr` as a child; return seconds and that child's own peak RSS in MB."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "dotsocr", "ocr", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    errors = child.stderr.read() if child.stderr else b""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        sys.exit(errors.decode()[-2000:])
    return seconds, usage.ru_maxrss / 1024


def watch(url: str) -> subprocess.Popen:
    """`dotsocr monitor --json` in the background, one line a second."""
    return subprocess.Popen(
        [sys.executable, "-m", "dotsocr", "monitor", "--server", url, "--json", "--interval", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )


def report(monitor: subprocess.Popen, measured: float) -> None:
    """What the monitor saw while pages ran, beside what we measured."""
    monitor.send_signal(signal.SIGINT)
    out, _ = monitor.communicate(timeout=30)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    busy = [line for line in lines if (line["running"] or 0) > 0 and line["rates"]["window_s"]]
    rates = sorted(line["rates"]["pages_per_s"] or 0.0 for line in busy)
    if not rates:
        print("monitor: saw no page in flight")
        return
    median = rates[len(rates) // 2]
    print(
        f"monitor: {len(lines)} refreshes, {len(busy)} busy; pages/s median {median:.2f} "
        f"(= {median / measured:.2f} of measured), peak {rates[-1]:.2f}; most running "
        f"{max(line['running'] for line in busy):.0f}, most waiting "
        f"{max(line['waiting'] or 0 for line in busy):.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--cpu-pages", type=int, default=20)
    args = parser.parse_args()
    ideal = args.capacity / args.latency
    # Not recording request bodies keeps this process small: a child forked from it
    # counts its pages in its own peak until it starts the command.
    state = StandIn(capacity=args.capacity, latency=args.latency, max_model_len=32768, record=False)
    server = start(state)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"stand-in: capacity {args.capacity}, latency {args.latency} s, ideal {ideal:.1f}/s")
        peaks = {}
        for pages in (300, 1000):
            pdf = book(pages, folder)
            monitor = watch(state.url) if pages == 1000 else None
            seconds, peak = ocr([
                str(pdf), "--server", state.url, "--concurrency", str(args.capacity * 2),
                "-o", str(folder / f"out-{pages}"), "-f", "json",
            ])  # fmt: skip
            rate = pages / seconds
            peaks[pages] = peak
            print(
                f"{pages:5d} pages: {seconds:6.1f} s, {rate:5.2f} pages/s = {rate / ideal:.2f} "
                f"of ideal; peak RSS {peak:.0f} MB"
            )
            if monitor:
                report(monitor, rate)
        print(f"peak RSS 1000 vs 300 pages: {peaks[1000] / peaks[300]:.2f}x")
        server.shutdown()
        pdf = book(args.cpu_pages, folder)
        seconds, _ = ocr([str(pdf), "--engine", "cpu", "-o", str(folder / "out-cpu"), "-f", "json"])
        rate = args.cpu_pages / seconds
        print(f"CPU engine: {args.cpu_pages} pages in {seconds:.1f} s = {rate:.2f} pages/s")


if __name__ == "__main__":
    main()
