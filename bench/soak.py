"""A long main job through the ordinary events of a GPU run: the server stopped and started
again twice, and the client killed with SIGKILL once and run again.

1,000 pages (ten 100-page TIFFs, each page marked with its number in black squares) go
through `dotsocr ocr --server` to the stand-in (tests/vllm_support/standin.py), which reads
each page's number from the pixels it is sent. The server goes away (connections refused,
requests in flight dropped) for --outage seconds after 20% and 70% of the pages; the client
is killed at 45% and run again over the same output folder.

    lost        pages not read ok in the final outputs
    read twice  pages sent to the server again after their result had been recorded: a
                second answer for a page in one run, or a page of the killed run's journal
                sent again by the rerun (pages in flight at the kill may be sent again)

    .venv/bin/python bench/soak.py [--pages 1000] [--outage 30] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vllm_support.server import free_port  # noqa: E402
from vllm_support.standin import StandIn, start  # noqa: E402

PAGE = (812, 1036)  # multiples of 28 within the pixel cap: sent as they are
CELL = 28
BITS = 12
PER_DOCUMENT = 100


def marked_page(number: int) -> Image.Image:
    """A page with ``number`` in binary as black squares along its top, and some text."""
    image = Image.new("L", PAGE, 255)
    draw = ImageDraw.Draw(image)
    for bit in range(BITS):
        if number >> bit & 1:
            x = CELL * (2 + 2 * bit)
            draw.rectangle((x, CELL * 2, x + CELL - 1, CELL * 3 - 1), fill=0)
    draw.text((CELL * 2, CELL * 5), f"Page {number} of the soak run.", fill=0)
    return image


def page_number(image: Image.Image) -> int:
    gray = image.convert("L")
    number = 0
    for bit in range(BITS):
        x = CELL * (2 + 2 * bit) + CELL // 2
        if gray.getpixel((x, CELL * 2 + CELL // 2)) < 128:
            number |= 1 << bit
    return number


def make_inputs(folder: Path, pages: int) -> None:
    folder.mkdir()
    for first in range(0, pages, PER_DOCUMENT):
        frames = [marked_page(n) for n in range(first, min(first + PER_DOCUMENT, pages))]
        frames[0].save(
            folder / f"doc-{first // PER_DOCUMENT:03d}.tif", save_all=True,
            append_images=frames[1:], compression="tiff_deflate",
        )  # fmt: skip


class Server:
    """The stand-in on one port, stopped and started again as a crashed server would be."""

    def __init__(self, latency: float, capacity: int) -> None:
        self.state = StandIn(latency=latency, capacity=capacity, record=False)
        self.state.on_answer = self._answered
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run = 1
        self.answers: list[tuple[int, int]] = []  # (client run, page number)
        self.lock = threading.Lock()
        self.httpd = start(self.state, port=self.port)

    def _answered(self, body: dict) -> None:
        part = body["messages"][0]["content"][0]
        data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        number = page_number(Image.open(io.BytesIO(data)))
        with self.lock:
            self.answers.append((self.run, number))

    def settle(self) -> None:
        """Wait until no request is being answered."""
        while self.state.in_flight or self.state.waiting:
            time.sleep(0.05)
        time.sleep(0.5)  # past the answer of the last one out of its latency

    def outage(self, seconds: float) -> None:
        self.state.down = True  # requests in flight are dropped unanswered
        self.httpd.shutdown()
        self.httpd.server_close()  # new connections are refused
        time.sleep(seconds)
        self.state.down = False
        self.httpd = start(self.state, port=self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def recorded(out: Path) -> set[int]:
    """Page numbers the client has recorded as read: journals and finished documents."""
    done: set[int] = set()
    markers = out / ".dotsocr"
    for journal in markers.glob("*.pages.jsonl"):
        first = int(journal.name.split(".")[0].split("-")[1]) * PER_DOCUMENT
        for line in journal.read_text().splitlines()[1:]:
            try:
                page = json.loads(line)
            except ValueError:
                continue  # cut by the kill
            if page.get("status") != "failed":
                done.add(first + page["index"])
    for marker in markers.glob("*.done.json"):
        first = int(marker.name.split(".")[0].split("-")[1]) * PER_DOCUMENT
        done.update(range(first, first + json.loads(marker.read_text())["pages"]))
    return done


def wait_until(share: float, pages: int, out: Path, client: subprocess.Popen) -> None:
    while len(recorded(out)) < share * pages:
        if client.poll() is not None:
            sys.exit(f"the client ended before {share:.0%} of the pages (exit {client.returncode})")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--capacity", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dotsocr-soak-"))
    inputs, out = work / "inputs", work / "out"
    make_inputs(inputs, args.pages)
    server = Server(args.latency, args.capacity)
    command = [sys.executable, "-m", "dotsocr", "ocr", str(inputs), "-o", str(out), "-f",
               "json", "--server", server.url, "--concurrency", str(args.capacity)]  # fmt: skip

    def client() -> subprocess.Popen:
        log = (work / f"client-{server.run}.log").open("w")
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

    started = time.perf_counter()
    restarts = 0
    try:
        run = client()
        wait_until(0.2, args.pages, out, run)
        server.outage(args.outage)
        restarts += 1
        wait_until(0.45, args.pages, out, run)
        run.send_signal(signal.SIGKILL)
        run.wait()
        kept = recorded(out)
        server.settle()  # answers to the killed run's last requests count as its own
        server.run = 2
        run = client()
        wait_until(0.7, args.pages, out, run)
        server.outage(args.outage)
        restarts += 1
        code = run.wait()
    finally:
        server.close()
    seconds = time.perf_counter() - started
    ok = 0
    for result in out.glob("*.json"):
        ok += sum(
            p["status"] in ("ok", "repaired") for p in json.loads(result.read_text())["pages"]
        )
    per_run = Counter(server.answers)
    twice = sum(n - 1 for n in per_run.values() if n > 1)
    twice += len({number for run, number in server.answers if run == 2} & kept)
    doubles = sorted(k for k, n in per_run.items() if n > 1)
    again = sorted({number for run, number in server.answers if run == 2} & kept)
    print(
        f"work folder: {work}; client logs there; answered twice in a run: {doubles[:10]}; "
        f"kept and sent again: {again[:10]}"
    )
    print(f"rerun exit code {code}; {seconds:.0f} s in all, {args.outage:.0f} s outages")
    print(f"pages recorded before the kill: {len(kept)}; answers sent: {len(server.answers)}")
    print(
        f"soak: {args.pages} pages, ok {ok}, lost {args.pages - ok}, read twice {twice}, "
        f"restarts {restarts}"
    )


if __name__ == "__main__":
    main()
