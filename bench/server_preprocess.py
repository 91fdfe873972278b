"""What each way of sending a page costs the vLLM server before its model runs.

    .venv/bin/python bench/server_preprocess.py [PDF] [--pages 12] [--chat-pages 6]
                                                [--repeat 3] [--verbose]

Starts the real vLLM (tests/vllm_support/server.py: the CPU build, the tiny dots.ocr
model with random weights, with the flags `dotsocr serve` plans, among them
--mm-processor-cache-gb 0 and --no-enable-prefix-caching, and an 8,192-token context)
and sends pages of the PDF (../shared/corpus/.../redp5110_sampled.pdf, else
tests/data/multi_page.pdf), drawn at the model's size from the 200-DPI frame as
`dotsocr ocr` now draws them, each page in four encodings, one request after another:

- RGB PNG written by Pillow at level 6 (the official parser's way): the anchor;
- RGB PNG written by OpenCV at level 1 (what we sent before grey and 1-bit pages);
- ours: document.encoding.encode of the compacted page (1-bit, grey or RGB PNG);
- JPEG: encode(..., "jpeg"), quality 90, grey or RGB as the page needs
  (PipelineOptions(image_format="jpeg")).

Measured, per encoding, side by side in one run:

- /tokenize with the chat and its image, ``--repeat`` times for each of ``--pages``
  pages: vLLM's API server loads the image and runs the model's processor on it exactly
  as for a chat completion (multimodal cache skipped), then answers without the engine.
  Its latency is the server's own preprocessing (plus HTTP and JSON): the measure.
- Chat completions, max_tokens=1, for the first ``--chat-pages`` pages: the client's
  latency, and the server's preprocessing from its Prometheus histograms (e2e latency,
  which starts before the image is loaded, less queue and inference time). The model's
  work is the same for every encoding of a page (checked: the prompt tokens agree, with
  each other and with /tokenize's count), so differences are preprocessing and noise.
- Here, in this process: our encoding time, and the time to turn the bytes into an RGB
  image as vLLM's image loader does.

vLLM's mm-processor stats (``enable_mm_processor_stats``) are not a CLI flag and are not
served over HTTP, so they are not used. Every chat's image differs by a pixel so that no
cache could serve one from another; the metrics show the multimodal and prefix cache hits.

Caveat: vLLM's CPU build, a tiny model with random weights, and the few cores of this
machine shared by client, API server and engine. The model's time is nothing like a real
GPU's (here the vision tower dominates a request), so compare the preprocessing columns
and the ratios, not the totals; a GPU server's API process decodes images on a CPU too.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dotsocr.document import DocumentOptions, Page, open_document  # noqa: E402
from dotsocr.document.encoding import compact, encode  # noqa: E402
from dotsocr.models import get_profile  # noqa: E402
from vllm_support import server  # noqa: E402

CORPUS = Path(os.environ.get("DOTSOCR_CORPUS", ROOT.parent / "shared/corpus"))
CORPUS_PDF = CORPUS / "docling/tests/data/pdf/sources/redp5110_sampled.pdf"
FALLBACK_PDF = ROOT / "tests/data/multi_page.pdf"
PROFILE = get_profile("dots.ocr")
MAX_MODEL_LEN = 8192  # a letter page at the model's size is about 4,800 image tokens


def pillow_png(image: Image.Image) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG", compress_level=6)
    return buffer.getvalue(), "image/png"


ENCODINGS: dict[str, Callable[[Image.Image], tuple[bytes, str]]] = {
    "RGB PNG Pillow 6": pillow_png,
    "RGB PNG OpenCV 1": lambda image: encode(image.convert("RGB"), "png"),
    "ours (encode)": lambda image: encode(compact(image), "png"),
    "JPEG q90": lambda image: encode(compact(image), "jpeg"),
}
ANCHOR = "RGB PNG Pillow 6"
METRICS = {
    "e2e": "vllm:e2e_request_latency_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "inference": "vllm:request_inference_time_seconds",
}


def pages(pdf: Path, count: int) -> list[Image.Image]:
    """The first ``count`` pages at the model's size (grey where they have no colour)."""
    found: list[Image.Image] = []
    with open_document(pdf, DocumentOptions(dpi=200), sent_size=PROFILE.model_size) as doc:
        for page in doc.pages():
            assert isinstance(page, Page), page
            found.append(page.image)
            if len(found) == count:
                break
    return [found[i % len(found)] for i in range(count)]  # a short PDF's pages again


def marked(image: Image.Image, serial: int) -> Image.Image:
    """A copy with pixel (serial, 0) black: every request's image is its own."""
    copy = image.copy()
    copy.putpixel((serial % copy.width, serial // copy.width), 0 if copy.mode == "L" else (0,) * 3)
    return copy


def decode(data: bytes) -> float:
    """Seconds to turn the bytes into the RGB image vLLM's processor takes, as its image
    loader does (base64 aside), in this process."""
    began = time.perf_counter()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode != "RGB":
            image.convert("RGB")
    return time.perf_counter() - began


def chat_body(image: Image.Image, data: bytes, media_type: str) -> dict:
    """The chat completion `dotsocr ocr` sends for the page (ocr task), max_tokens=1."""
    size = image.size
    prepared = PROFILE.prepare(Image.new("L", size), *size)  # geometry and tokens only
    assert prepared.geometry.model_size == size
    prepared.encoded["png"] = f"data:{media_type};base64," + base64.b64encode(data).decode()
    return PROFILE.build_request(prepared, "ocr", max_tokens=1, temperature=0.0).to_openai("model")


def scrape(client: httpx.Client) -> dict[str, float]:
    """Sums and the request count of the histograms in METRICS, and cache hits, over every
    label set."""
    text = client.get("/metrics").text

    def total(name: str) -> float:
        pattern = rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    found = {key: total(f"{name}_sum") for key, name in METRICS.items()}
    found["count"] = total(f"{METRICS['e2e']}_count")
    found["mm hits"] = total("vllm:mm_cache_hits_total")
    found["prefix hits"] = total("vllm:prefix_cache_hits_total")
    return found


def tokenize(client: httpx.Client, body: dict) -> tuple[float, int]:
    """/tokenize of the chat with its image: the latency and the count."""
    request = {"model": "model", "messages": body["messages"], "add_generation_prompt": True}
    started = time.perf_counter()
    response = client.post("/tokenize", json=request)
    latency = time.perf_counter() - started
    response.raise_for_status()
    return latency, response.json()["count"]


def chat(client: httpx.Client, body: dict) -> tuple[float, float, int]:
    """One chat completion: the client's latency, the server's preprocessing (from its
    metrics) and the prompt tokens."""
    before = scrape(client)
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    latency = time.perf_counter() - started
    response.raise_for_status()
    deadline = time.monotonic() + 10
    while (after := scrape(client))["count"] <= before["count"]:  # metrics lag the answer
        if time.monotonic() > deadline:
            raise RuntimeError("vLLM's metrics did not count the request")
        time.sleep(0.01)
    delta = {key: after[key] - before[key] for key in METRICS}
    preprocess = delta["e2e"] - delta["queue"] - delta["inference"]
    return latency, preprocess, response.json()["usage"]["prompt_tokens"]


def best(repeat: int, run: Callable[[], float]) -> float:
    """The least of ``repeat`` runs: what the work takes when nothing else gets in."""
    return min(run() for _ in range(repeat))


def measure(url: str, images: list[Image.Image], args: argparse.Namespace) -> dict:
    """Per encoding, one value a page for each key (the chats: for the first pages)."""
    names = list(ENCODINGS)
    keys = ("bytes", "encode", "decode", "tokenize", "latency", "prep")
    results = {name: {key: [] for key in keys} for name in names}
    bodies: list[dict[str, dict]] = []
    for i, page in enumerate(images):
        bodies.append({})
        for k, name in enumerate(names):
            image = marked(page, i * len(names) + k)
            began = time.perf_counter()
            data, media_type = ENCODINGS[name](image)
            r = results[name]
            r["encode"].append(time.perf_counter() - began)
            r["bytes"].append(len(data))
            r["decode"].append(best(args.repeat, lambda data=data: decode(data)))
            with Image.open(io.BytesIO(data)) as sent:
                r.setdefault("kind", []).append(f"{sent.format} {sent.mode}")
            bodies[i][name] = chat_body(image, data, media_type)
            if args.verbose:
                kind = r["kind"][-1]
                print(f"  page {i + 1:2d} {name:17} {kind:8} {len(data) / 1e3:5.0f} KB")
    with httpx.Client(base_url=url, timeout=300) as client:
        for k, name in enumerate(names):  # warm every decoder and code path (not measured)
            image = marked(images[0], 10_000 + k)
            body = chat_body(image, *ENCODINGS[name](image))
            tokenize(client, body)
            if name == ANCHOR:
                chat(client, body)
        counts: list[set[int]] = [set() for _ in images]
        # The server's preprocessing alone: /tokenize, with the engine idle.
        for i, page_bodies in enumerate(bodies):
            order = names[i % len(names) :] + names[: i % len(names)]  # none always first
            for name in order:

                def once(body=page_bodies[name], i=i) -> float:
                    seconds, count = tokenize(client, body)
                    counts[i].add(count)
                    return seconds

                results[name]["tokenize"].append(best(args.repeat, once))
        # Whole requests, max_tokens=1.
        start = scrape(client)
        for i, page_bodies in enumerate(bodies[: args.chat_pages]):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                latency, prep, prompt_tokens = chat(client, page_bodies[name])
                results[name]["latency"].append(latency)
                results[name]["prep"].append(prep)
                counts[i].add(prompt_tokens)
        end = scrape(client)
    for i, found in enumerate(counts):
        assert len(found) == 1, f"page {i + 1}: the token counts differ: {found}"
    chats = min(args.chat_pages, len(images)) * len(names)
    hits = {key: end[key] - start[key] for key in ("mm hits", "prefix hits")}
    print(
        f"{len(images) * len(names) * args.repeat} /tokenize and {chats} chat requests, "
        f"sequential; cache hits during the chats: multimodal {hits['mm hits']:.0f}, "
        f"prefix {hits['prefix hits']:.0f}; prompt tokens equal across encodings: "
        + ", ".join(str(next(iter(found))) for found in counts)
    )
    return results


def report(results: dict, args: argparse.Namespace) -> None:
    def stats(name: str, key: str) -> str:
        values, anchor = results[name][key], results[ANCHOR][key]
        median, mean = 1e3 * statistics.median(values), 1e3 * statistics.fmean(values)
        ratio = statistics.median(v / a for v, a in zip(values, anchor, strict=True))
        return f"{median:7.1f} {mean:7.1f} {ratio:5.2f}"

    head = f"{'median':>7} {'mean':>7} {'ratio':>5}"
    print(
        f"\n{args.pages} pages; ms per request, best of {args.repeat} for decode and /tokenize; "
        f"ratio: the median over pages of the page's time over {ANCHOR}'s"
    )
    print(f"{'':17} {'':>6} {'encode':>7} | {'decode here':^21} | {'/tokenize (server prep)':^21}")
    print(f"{'encoding':17} {'KB/req':>6} {'mean':>7} | {head} | {head}")
    for name in results:
        r = results[name]
        print(
            f"{name:17} {statistics.fmean(r['bytes']) / 1e3:6.0f} "
            f"{1e3 * statistics.fmean(r['encode']):7.1f} | {stats(name, 'decode')} | "
            f"{stats(name, 'tokenize')}"
        )
    ours, before = results["ours (encode)"], results["RGB PNG OpenCV 1"]
    for kind in sorted(set(ours["kind"])):
        pages = [i for i, k in enumerate(ours["kind"]) if k == kind]

        def ratio(key: str, pages=pages) -> float:
            return statistics.median(ours[key][i] / before[key][i] for i in pages)

        print(
            f"ours on its {len(pages)} {kind} pages over RGB PNG OpenCV 1: bytes "
            f"{ratio('bytes'):.2f}, decode here {ratio('decode'):.2f}, "
            f"/tokenize {ratio('tokenize'):.2f}"
        )
    print(f"\nchat completions, max_tokens=1, first {min(args.chat_pages, args.pages)} pages")
    print(f"{'':17} | {'request latency':^21} | {'server prep (metrics)':^21}")
    print(f"{'encoding':17} | {head} | {head}")
    for name in results:
        print(f"{name:17} | {stats(name, 'latency')} | {stats(name, 'prep')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdf", nargs="?", type=Path)
    parser.add_argument("--pages", type=int, default=12, help="pages sent to /tokenize")
    parser.add_argument("--chat-pages", type=int, default=6, help="of them, sent as chats")
    parser.add_argument("--repeat", type=int, default=5, help="/tokenize requests a page")
    parser.add_argument("--verbose", action="store_true", help="print every page")
    args = parser.parse_args()
    pdf = args.pdf or (CORPUS_PDF if CORPUS_PDF.is_file() else FALLBACK_PDF)
    if not server.installed():
        sys.exit(f"no finished vLLM install at {server.VENV}: run scripts/setup-vllm")
    images = pages(pdf, args.pages)
    modes: dict[str, int] = {}
    for image in images:
        mode = "1-bit" if image.mode == "L" and sum(image.histogram()[1:255]) == 0 else image.mode
        modes[mode] = modes.get(mode, 0) + 1
    sizes = ", ".join(sorted({f"{w}x{h}" for w, h in (image.size for image in images)}))
    sent = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
    print(f"{pdf.name}: {len(images)} pages, 200 DPI, drawn at {sizes}; ours sends {sent}")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        served = server.start(Path(tmp), max_model_len=MAX_MODEL_LEN)
        print(f"vLLM CPU build at {served.url}, ready in {time.perf_counter() - started:.0f} s")
        try:
            results = measure(served.url, images, args)
        finally:
            served.stop()
    report(results, args)


if __name__ == "__main__":
    main()
