"""Pipeline throughput against the stand-in server, and the CPU engine's pages/s.

A stand-in with capacity C (requests served at once) and latency L (seconds each) can
do at most C/L pages/s; `dotsocr ocr --server` over a 300-page and a 1000-page PDF
should reach 90% of that, with peak memory flat between the two (goal: under 500 MB).

    .venv/bin/python bench/throughput.py [--capacity 8] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pikepdf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vllm_support.standin import StandIn, start  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "multi_page.pdf"


def book(pages: int, folder: Path) -> Path:
    path = folder / f"book-{pages}.pdf"
    with pikepdf.open(SAMPLE) as source, pikepdf.new() as pdf:
        while len(pdf.pages) < pages:
            pdf.pages.extend(source.pages[: pages - len(pdf.pages)])
        buffer = io.BytesIO()
        pdf.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path


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
        print(f"peak RSS 1000 vs 300 pages: {peaks[1000] / peaks[300]:.2f}x")
        server.shutdown()
        pdf = book(args.cpu_pages, folder)
        seconds, _ = ocr([str(pdf), "--engine", "cpu", "-o", str(folder / "out-cpu"), "-f", "json"])
        rate = args.cpu_pages / seconds
        print(f"CPU engine: {args.cpu_pages} pages in {seconds:.1f} s = {rate:.2f} pages/s")


if __name__ == "__main__":
    main()
