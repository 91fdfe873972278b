"""Pages per second for preparing a PDF's pages for the model server, ours against the
official dots.ocr parser's, on one core.

Preparing a page is all that happens between the PDF and the request: render the page,
size it for the model, encode it losslessly and base64 it into a data URL. On the same
PDF, pinned to one core, in CPU time, passes of the two taking turns (the fastest of
each side's passes is reported: the machine may be shared), this prints:

- the official parser's: its dots_ocr/utils, imported from the checkout that
  DOTS_OCR_CHECKOUT names (load_images_from_pdf, then per page fetch_image and
  PILimage_to_base64); without that variable, a re-statement of the same steps: PyMuPDF
  renders every page at 200 DPI into a list first (again at 72 DPI when a side passes
  4500 px), then each page is copied to RGB, written as PNG by Pillow at its default
  level, and base64'd;
- ours, the steps of the pipeline's _prepare.build: pages rendered at the model's size
  (grey check included), has_ink, profile.prepare, encode, base64; the split per step,
  and how many pages went as grey, 1-bit and RGB PNG;
- ours / official in pages/s and in bytes per page (the issue's goals: >= 2.0x and
  <= 1.1x; printed, never asserted);
- PNG encoders on the same pages at the model's size: why encode() writes what it writes.

    .venv/bin/pip install -e ".[bench]"   # PyMuPDF, for the official parser's steps
    .venv/bin/python bench/prepare.py [PDF] [--repeat N]

PDF defaults to docling's redp5110_sampled.pdf in the shared corpus (DOTSOCR_CORPUS
overrides the corpus root), else tests/data/multi_page.pdf. An image instead of a PDF
is measured without the official parser's PDF steps.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import math
import os
import sys
import time
import types
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.document.encoding import compact, encode
from dotsocr.document.ink import has_ink
from dotsocr.models import get_profile

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("DOTSOCR_CORPUS", ROOT.parent / "shared/corpus"))
CORPUS_PDF = CORPUS / "docling/tests/data/pdf/sources/redp5110_sampled.pdf"
FALLBACK_PDF = ROOT / "tests/data/multi_page.pdf"
DPI = 200
STEPS = ("render", "ink", "prepare", "encode", "base64")
KINDS = {(1, 0): "1-bit", (8, 0): "grey", (8, 2): "RGB"}  # PNG IHDR: bit depth, colour type
# This process's CPU time: on one core, what a page costs that core, however busy the
# machine is with other work (wall time there counts the waits for the core too).
clock = time.process_time

Official = tuple[str, Callable[[Path], list[Image.Image]], Callable[[Image.Image], str]]


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def official_steps() -> Official | str:
    """(what is measured, PDF to page images, page image to data URL), or why not."""
    checkout = os.environ.get("DOTS_OCR_CHECKOUT")
    if checkout:
        # Its dots_ocr/__init__.py imports the whole parser (OpenAI client, tqdm): load
        # the package's folder without it, and only the utils the parser prepares with.
        package = types.ModuleType("dots_ocr")
        package.__path__ = [str(Path(checkout) / "dots_ocr")]
        sys.modules["dots_ocr"] = package
        try:
            with warnings.catch_warnings():  # PyMuPDF's: "the fitz API is deprecated"
                warnings.simplefilter("ignore", FutureWarning)
                from dots_ocr.utils.doc_utils import load_images_from_pdf
                from dots_ocr.utils.image_utils import PILimage_to_base64, fetch_image
        except ImportError as exc:
            return f"cannot import dots_ocr/utils from {checkout} ({exc})"
        return (
            f"dots_ocr/utils imported from {checkout}",
            lambda pdf: load_images_from_pdf(str(pdf), dpi=DPI),
            lambda image: PILimage_to_base64(fetch_image(image)),
        )
    try:
        import pymupdf
    except ImportError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                import fitz as pymupdf
        except ImportError:
            return "PyMuPDF is not installed"

    def render(pdf: Path) -> list[Image.Image]:  # doc_utils.load_images_from_pdf
        images = []
        with pymupdf.open(pdf) as doc:
            for page in doc:
                pixmap = page.get_pixmap(matrix=pymupdf.Matrix(DPI / 72, DPI / 72), alpha=False)
                if pixmap.width > 4500 or pixmap.height > 4500:  # its fallback: 72 DPI
                    pixmap = page.get_pixmap(matrix=pymupdf.Matrix(1, 1), alpha=False)
                size = (pixmap.width, pixmap.height)
                images.append(Image.frombytes("RGB", size, pixmap.samples))
        return images

    def send(image: Image.Image) -> str:  # image_utils.fetch_image, PILimage_to_base64
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return data_url(buffer.getvalue(), "image/png")

    return f"re-statement of its dots_ocr/utils steps, PyMuPDF {pymupdf.VersionBind}", render, send


def official_pass(pdf: Path, load: Callable, send: Callable) -> Counter:
    totals: Counter = Counter()
    start = clock()
    images = load(pdf)  # every page rendered before the first is sent, as the parser does
    rendered = clock()
    totals["bytes"] += sum(len(send(image)) for image in images)
    totals["render"] += rendered - start
    totals["encode"] += clock() - rendered
    totals["pages"] += len(images)
    return totals


def our_pass(pdf: Path, kinds: Counter | None, sent: list) -> Counter:
    """One pass of ours; ``kinds`` and ``sent`` (the images as sent) filled when given."""
    profile = get_profile("dots.ocr")
    totals: Counter = Counter()
    start = clock()
    doc = open_document(pdf, DocumentOptions(dpi=DPI), sent_size=profile.model_size)
    totals["render"] += clock() - start
    with doc:
        pages = doc.pages()
        while True:
            marks = [clock()]
            page = next(pages, None)
            marks.append(clock())
            if page is None:
                break
            if not isinstance(page, Page):  # a page that failed to render
                totals["failed"] += 1
                continue
            has_ink(page.image)
            marks.append(clock())
            prepared = profile.prepare(page.image, page.width, page.height, None, page.dpi)
            image = prepared.image
            if image is not page.image:  # resized here: compacted again, as the pipeline does
                image = compact(image)
            marks.append(clock())
            data, media_type = encode(image, "png")
            marks.append(clock())
            totals["bytes"] += len(data_url(data, media_type))
            marks.append(clock())
            for step, (begin, end) in zip(STEPS, itertools.pairwise(marks), strict=True):
                totals[step] += end - begin
            totals["pages"] += 1
            if kinds is not None:
                kinds[KINDS.get((data[24], data[25]), "other")] += 1
                sent.append(image)
    return totals


def encoders() -> dict[str, tuple[bool, Callable[[Image.Image], bytes]]]:
    """Name: (whether it is given the page in RGB, image to PNG bytes)."""
    import cv2

    cv2.setNumThreads(1)

    def pillow(level: int) -> Callable[[Image.Image], bytes]:
        def write(image: Image.Image) -> bytes:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=level)
            return buffer.getvalue()

        return write

    def opencv(*filter_: int) -> Callable[[Image.Image], bytes]:
        def write(image: Image.Image) -> bytes:
            raw = image.tobytes("raw", "BGR")  # the copy out of Pillow, as encode() makes
            pixels = np.frombuffer(raw, np.uint8).reshape(image.height, image.width, 3)
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1, *filter_]
            return cv2.imencode(".png", pixels, params)[1].tobytes()

        return write

    return {
        "Pillow PNG level 1, RGB": (True, pillow(1)),
        "Pillow PNG level 6 (default, as official), RGB": (True, pillow(6)),
        "OpenCV PNG level 1, filter NONE, RGB": (
            True,
            opencv(cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE),
        ),
        "OpenCV PNG level 1, filter UP, RGB": (
            True,
            opencv(cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP),
        ),
        "OpenCV PNG level 1, its default filter, RGB": (True, opencv()),
        "ours: encode(), grey / 1-bit / RGB": (False, lambda image: encode(image, "png")[0]),
    }


def split(totals: Counter, steps: dict[str, str]) -> str:
    """Each step's ms per page and share of the time."""
    total = sum(totals[step] for step in steps)
    return "  ".join(
        f"{label} {1e3 * totals[step] / totals['pages']:5.1f} ms ({totals[step] / total:3.0%})"
        for step, label in steps.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdf", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pdf = args.pdf or (CORPUS_PDF if CORPUS_PDF.is_file() else FALLBACK_PDF)
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core (Linux), for ours and theirs alike
    encode(Image.new("L", (8, 8)), "png")  # imports OpenCV outside the timings

    official = official_steps() if pdf.suffix.lower() == ".pdf" else "not a PDF"
    print(
        f"{pdf.name}, {DPI} DPI, one core (CPU {cpu}), CPU time, "
        f"the best of {args.repeat} passes each"
    )
    passes: dict[str, list[Counter]] = {"theirs": [], "ours": []}
    kinds, sent = Counter(), []
    for n in range(args.repeat):  # taking turns, so both see the same machine
        if not isinstance(official, str):
            _, load, send = official
            passes["theirs"].append(official_pass(pdf, load, send))
        passes["ours"].append(our_pass(pdf, kinds if n == 0 else None, sent))
    # Each side's fastest pass: what the code costs, less what others ran meanwhile.
    theirs = min(passes["theirs"], key=lambda t: t["render"] + t["encode"], default=None)
    ours = min(passes["ours"], key=lambda t: sum(t[step] for step in STEPS))

    ours_rate = ours["pages"] / sum(ours[step] for step in STEPS)
    ours_kb = ours["bytes"] / ours["pages"] / 1e3
    if isinstance(official, str):
        print(f"official parser: not measured ({official}); ours only")
    else:
        rate = theirs["pages"] / (theirs["render"] + theirs["encode"])
        kb = theirs["bytes"] / theirs["pages"] / 1e3
        print(f"official parser ({official[0]}):")
        print(
            f"  {rate:5.2f} pages/s  {kb:4.0f} KB base64/page  "
            + split(theirs, {"render": "render", "encode": "RGB copy+PNG+base64"})
        )
    print("ours (dotsocr, the steps of pipeline._prepare.build):")
    print(
        f"  {ours_rate:5.2f} pages/s  {ours_kb:4.0f} KB base64/page  sent as "
        + ", ".join(f"{kinds[kind]} {kind}" for kind in ("grey", "1-bit", "RGB"))
        + (f", {kinds['other']} other" if kinds["other"] else "")
        + (f"; {ours['failed']} pages failed to render" if ours["failed"] else "")
    )
    print("  " + split(ours, {"render": "render+grey", **{s: s for s in STEPS[1:]}}))
    if not isinstance(official, str):
        print(
            f"ours / official: {ours_rate / rate:.2f}x pages/s (goal >= 2.0), "
            f"{ours_kb / kb:.3f}x bytes/page (goal <= 1.1)"
        )

    print(f"PNG encoders on our {len(sent)} pages at the model's size, best of {args.repeat}:")
    print(f"  {'encoder':47s} {'ms/page':>8s} {'KB base64/page':>15s}")
    rgb = [image.convert("RGB") for image in sent]
    for name, (as_rgb, write) in encoders().items():
        images = rgb if as_rgb else sent
        seconds = []
        for _ in range(args.repeat):
            start = clock()
            size = sum(4 * math.ceil(len(write(image)) / 3) for image in images)
            seconds.append(clock() - start)
        ms = 1e3 * min(seconds) / len(images)
        print(f"  {name:47s} {ms:8.1f} {size / len(images) / 1e3:15.0f}")


if __name__ == "__main__":
    main()
