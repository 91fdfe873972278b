"""The embedded CPU engine against plain Tesseract, on the dev corpus, in one run.

Three readers, one core each (one page at a time), on the same pages:
- ``tesseract``: plain Tesseract on the page image (PSM AUTO, the page's text as it
  gives it), the anchor;
- ``engine, no text layer``: the embedded engine with ``--text-layer never`` (OCR,
  layout model, reading order);
- ``engine``: the embedded engine with its defaults (a PDF's own text where trusted).

Sets: scans with full transcripts (Tesseract's test pages, Chinese pages made from known
text), born-digital PDFs against docling's Markdown (docling's own output, so a rough
reference: it differs in table and formula syntax), and olmOCR-bench's present, absent
and order cases. Character error rate = edit distance / reference length, with Markdown
syntax, HTML tags and whitespace removed on both sides.

    .venv/bin/python bench/cpu_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.engines.choice import EngineSettings, open_engine
from dotsocr.models import get_profile
from dotsocr.pipeline import DocumentDone, Pipeline, PipelineOptions, Source
from dotsocr.render.markdown import render_markdown

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CORPUS = Path(os.environ.get("DOTSOCR_CORPUS", ROOT.parent / "shared/corpus"))
SAMPLE = CORPUS / "olmocr/olmocr/bench/sample_data"
DOCLING = CORPUS / "docling/tests/data/pdf"
TESSERACT = CORPUS / "tesseract_test/testing"
BORN_DIGITAL = [
    "2305.03393v1-pg9",
    "multi_page",
    "normal_4pages",
    "code_and_formula",
    "amt_handbook_sample",
    "picture_classification",
    "redp5110_sampled",
]
SCANS = [("phototest.tif", "phototest.txt"), ("eurotext.tif", "eurotext.txt")]


@dataclass
class Reading:
    text: str
    seconds: float
    pages: int


Reader = Callable[[Path, str | None], Reading]


def plain_text(markdown: str) -> str:
    """What the error rate compares: words and punctuation, no markup, no whitespace."""
    text = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"[#*_|`>~\\$]|-{3,}|^\s*- ", " ", text, flags=re.M)
    return "".join(text.split())


def error_rate(found: str, truth: str) -> float:
    truth, found = plain_text(truth), plain_text(found)
    return Levenshtein.distance(found, truth) / max(1, len(truth))


def tesseract_reader() -> Reader:
    from tesserocr import PSM, PyTessBaseAPI

    from dotsocr.engines.tesseract import tesseract_languages

    api = PyTessBaseAPI(path=str(tesseract_languages()["eng"]), lang="eng", psm=PSM.AUTO)

    def read(path: Path, pages: str | None) -> Reading:
        texts, count = [], 0
        started = time.perf_counter()  # rendering included, as for the engine
        with open_document(path, DocumentOptions(dpi=200, pages=pages)) as doc:
            for page in doc.pages():
                assert isinstance(page, Page), page.error
                api.SetImage(page.image)
                api.SetSourceResolution(round(page.dpi or 200))
                texts.append(api.GetUTF8Text())
                count += 1
        return Reading("\n".join(texts), time.perf_counter() - started, count)

    return read


def engine_reader(text_layer: str) -> Reader:
    """The embedded engine, started once and kept for every document (as in a real run)."""
    from contextlib import AsyncExitStack

    profile = get_profile("dots.ocr")
    settings = EngineSettings(engine="cpu", concurrency=1, text_layer=text_layer)
    runner = asyncio.Runner()
    stack = AsyncExitStack()
    engine = runner.run(open_engine(settings, stack))

    async def run(path: Path, pages: str | None) -> Reading:
        options = PipelineOptions(concurrency=1, document=DocumentOptions(dpi=200, pages=pages))
        started = time.perf_counter()
        done = None
        async for event in Pipeline(engine, profile, options).run([Source(path.name, path)]):
            if isinstance(event, DocumentDone):
                done = event
        seconds = time.perf_counter() - started
        assert done is not None and done.error is None, done
        text = render_markdown(done.result, pictures="omit").text
        return Reading(text, seconds, len(done.result.pages))

    return lambda path, pages: runner.run(run(path, pages))


def chinese_pages(folder: Path) -> list[tuple[Path, str]]:
    """Pages made from the known Chinese texts of the tests, clean and scanned-looking."""
    import cjk_pages

    if not cjk_pages.font_available():
        print(f"chinese: skipped (no CJK font: apt-get install {cjk_pages.FONT_PACKAGE})")
        return []
    pages = []
    for name, text in sorted(cjk_pages.passages().items()):
        clean = cjk_pages.render_page(text)
        for variant, image in (("clean", clean), ("scanned", cjk_pages.scanned(clean))):
            path = folder / f"{name}-{variant}.png"
            image.save(path, dpi=(200, 200))
            pages.append((path, text))
    return pages


def olmocr_cases(read: Reader, quick: bool) -> dict[str, tuple[int, int]]:
    """Cases met and run, by kind: present and absent together (olmOCR-bench's text
    presence), and order."""
    cases = [json.loads(line) for line in (SAMPLE / "dataset.jsonl").read_text().splitlines()]
    cases = [c for c in cases if c["type"] in ("present", "absent", "order")]
    if quick:
        cases = cases[:12]
    cache: dict[tuple[str, int], str] = {}
    counts = {"present/absent": [0, 0], "order": [0, 0]}
    for case in cases:
        key = (case["pdf"], case["page"])
        if key not in cache:
            cache[key] = normalise(read(SAMPLE / "pdfs" / case["pdf"], str(case["page"])).text)
        kind = "order" if case["type"] == "order" else "present/absent"
        counts[kind][0] += meets(case, cache[key])
        counts[kind][1] += 1
    return {kind: (met, run) for kind, (met, run) in counts.items()}


def normalise(text: str) -> str:
    for fancy, plain in (("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'")):
        text = text.replace(fancy, plain)
    return " ".join(text.split())


def meets(case: dict, found: str) -> bool:
    """olmOCR-bench's rule, simplified: fuzzy presence, absence, or order of two texts."""

    def where(text: str) -> int:
        text = normalise(text)
        at = found.find(text)
        if at >= 0:
            return at
        match = fuzz.partial_ratio_alignment(text, found)
        return match.dest_start if match and match.score >= 90 else -1

    if case["type"] == "order":
        before, after = where(case["before"]), where(case["after"])
        return before >= 0 and after >= 0 and before < after
    text = normalise(case["text"])
    if case.get("first_n"):
        found = found[: case["first_n"]]
    if case.get("last_n"):
        found = found[-case["last_n"] :]
    present = text in found or fuzz.partial_ratio(text, found) >= 97
    return present == (case["type"] == "present")


def measure(name: str, read: Reader, items: list[tuple[Path, str | None, str]]) -> tuple:
    seconds = pages = 0.0
    rates = []
    for path, pages_wanted, truth in items:
        reading = read(path, pages_wanted)
        seconds += reading.seconds
        pages += reading.pages
        rates.append(error_rate(reading.text, truth))
    mean = sum(rates) / len(rates) if rates else float("nan")
    return pages, seconds, mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pages, for a smoke run")
    args = parser.parse_args()
    work = ROOT / ".bench-cpu"
    work.mkdir(exist_ok=True)
    scans = [(TESSERACT / image, None, (TESSERACT / text).read_text()) for image, text in SCANS]
    born = [
        (DOCLING / "sources" / f"{name}.pdf", None,
         (DOCLING / "groundtruth" / f"{name}.md").read_text())
        for name in BORN_DIGITAL[: 3 if args.quick else None]
    ]  # fmt: skip
    chinese = [(path, None, truth) for path, truth in chinese_pages(work)]
    readers = {
        "tesseract": tesseract_reader(),
        "engine, no text layer": engine_reader("never"),
        "engine": engine_reader("auto"),
    }
    for read in readers.values():  # models loaded and threads started before timing
        read(TESSERACT / "phototest.tif", None)
    print(f"{'set':<14} {'reader':<24} {'pages':>5} {'pages/s':>8} {'x anchor':>8} {'CER':>7}")
    for label, items, chosen in (
        ("scans", scans, readers),
        ("born-digital", born, readers),
        ("chinese", chinese, readers),
    ):
        if not items:
            continue
        anchor = None
        for name, read in chosen.items():
            pages, seconds, cer = measure(name, read, items)
            rate = pages / seconds if seconds else float("nan")
            anchor = anchor or rate
            print(
                f"{label:<14} {name:<24} {pages:>5.0f} {rate:>8.2f} {rate / anchor:>8.2f} "
                f"{100 * cer:>6.1f}%"
            )
    for name, read in readers.items():
        counts = olmocr_cases(read, args.quick)
        met = ", ".join(f"{kind} {n} of {total}" for kind, (n, total) in counts.items())
        print(f"olmOCR-bench cases, {name}: {met}")


if __name__ == "__main__":
    Image.MAX_IMAGE_PIXELS = None
    main()
