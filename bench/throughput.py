"""Pipeline throughput against the stand-in server, and the CPU engine's pages/s.

A stand-in with capacity C (requests served at once) and latency L (seconds each) can
do at most C/L pages/s; `dotsocr ocr --server` over a 300-page and a 1000-page PDF
should reach 90% of that (95% at capacity 8), with peak memory flat between the two (goal at
capacity 16: 300 MB for the whole process tree). Needs the bench extra (psutil).
Peak memory is that of the whole process tree of each run: the RSS of the `dotsocr ocr`
child and all its descendants (process pools included), summed, sampled every 50 ms
(pages shared between processes count once per process, so this errs high). The
child's ru_maxrss is printed beside it: the most any one process of its tree held, and
no less than this process's RSS when it spawned the child (a forked or vforked child
starts with its parent's pages, and exec keeps their count), which the stand-in, serving
from here, makes grow. `dotsocr monitor` watches the largest run from the stand-in's
/metrics (vLLM's names) and its pages/s is printed beside the measured one.

    .venv/bin/python bench/throughput.py [--capacity 8] [--latency 1.0] [--pages 300,1000]
        [--cpu-pages 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vllm_support.documents import book  # noqa: E402
from vllm_support.standin import StandIn, start  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "multi_page.pdf"


class TreePeak(threading.Thread):
    """The most RSS a process and all its descendants held together, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0  # bytes
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.sample())
            self.stop.wait(0.05)

    def sample(self) -> int:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the child is gone
            return 0
        total = 0
        for process in tree:
            with contextlib.suppress(psutil.Error):  # ended since it was listed
                total += process.memory_info().rss
        return total


def ocr(args: list[str]) -> tuple[float, float, float]:
    """Run `dotsocr ocr` as a child; return seconds, the peak RSS of its process tree and
    the child's ru_maxrss, both in MB."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "dotsocr", "ocr", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = TreePeak(child.pid)
    peak.start()
    errors = child.stderr.read() if child.stderr else b""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    peak.stop.set()
    peak.join()
    if os.waitstatus_to_exitcode(status):
        sys.exit(errors.decode()[-2000:])
    return seconds, peak.peak / 2**20, usage.ru_maxrss / 1024


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
    parser.add_argument("--pages", default="300,1000", help="page counts, comma-separated")
    parser.add_argument("--cpu-pages", type=int, default=20)
    args = parser.parse_args()
    counts = sorted(int(count) for count in args.pages.split(","))
    ideal = args.capacity / args.latency
    # Not recording request bodies keeps this process small: a child spawned from it
    # starts with its pages, and its ru_maxrss keeps counting them past the exec.
    state = StandIn(capacity=args.capacity, latency=args.latency, max_model_len=32768, record=False)
    server = start(state)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"stand-in: capacity {args.capacity}, latency {args.latency} s, ideal {ideal:.1f}/s")
        peaks = {}
        for pages in counts:
            pdf = book(pages, folder)
            monitor = watch(state.url) if pages == counts[-1] else None
            seconds, tree, own = ocr([
                str(pdf), "--server", state.url, "--concurrency", str(args.capacity * 2),
                "-o", str(folder / f"out-{pages}"), "-f", "json",
            ])  # fmt: skip
            rate = pages / seconds
            peaks[pages] = (tree, own)
            print(
                f"{pages:5d} pages: {seconds:6.1f} s, {rate:5.2f} pages/s = {rate / ideal:.2f} "
                f"of ideal; peak RSS {tree:.0f} MB process tree ({own:.0f} MB child's ru_maxrss)"
            )
            if monitor:
                report(monitor, rate)
        if len(counts) > 1:
            (tree_low, own_low), (tree_high, own_high) = peaks[counts[0]], peaks[counts[-1]]
            print(
                f"peak RSS {counts[-1]} vs {counts[0]} pages: {tree_high / tree_low:.2f}x "
                f"process tree, {own_high / own_low:.2f}x child's ru_maxrss"
            )
        server.shutdown()
        pdf = book(args.cpu_pages, folder)
        seconds, tree, own = ocr(
            [str(pdf), "--engine", "cpu", "-o", str(folder / "out-cpu"), "-f", "json"]
        )
        rate = args.cpu_pages / seconds
        print(
            f"CPU engine: {args.cpu_pages} pages in {seconds:.1f} s = {rate:.2f} pages/s; "
            f"peak RSS {tree:.0f} MB process tree ({own:.0f} MB child's ru_maxrss)"
        )


if __name__ == "__main__":
    main()
