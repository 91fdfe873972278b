"""Pages per second for preparing pages of a multi-page PDF on one core.

Preparing a page is: render (PDFium at 200 DPI), resize (to the model's size) and
encode (PNG for the data URL). Prints the split per step and the PNG level trade-off.

    .venv/bin/python bench/prepare.py [PDF] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.models import get_profile

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("DOTSOCR_CORPUS", ROOT.parent / "shared/corpus"))
CORPUS_PDF = CORPUS / "docling/tests/data/pdf/sources/redp5110_sampled.pdf"
FALLBACK_PDF = ROOT / "tests/data/multi_page.pdf"


def run(pdf: Path, repeat: int, level: int) -> dict[str, float]:
    profile = get_profile("dots.ocr")
    totals = {"render": 0.0, "resize": 0.0, "encode": 0.0, "pages": 0, "bytes": 0}
    for _ in range(repeat):
        with open_document(pdf, DocumentOptions(dpi=200)) as doc:
            pages = doc.pages()
            while True:
                start = time.perf_counter()
                page = next(pages, None)
                rendered = time.perf_counter()
                if page is None:
                    break
                assert isinstance(page, Page), page
                prepared = profile.prepare(page.image, page.width, page.height)
                resized = time.perf_counter()
                payload = prepared.data_url(level)
                encoded = time.perf_counter()
                totals["render"] += rendered - start
                totals["resize"] += resized - rendered
                totals["encode"] += encoded - resized
                totals["pages"] += 1
                totals["bytes"] += len(payload)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdf", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pdf = args.pdf or (CORPUS_PDF if CORPUS_PDF.is_file() else FALLBACK_PDF)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(f"{pdf.name}, 200 DPI, one core, {args.repeat} pass(es)")
    results = {level: run(pdf, args.repeat, level) for level in (1, 6)}
    for level, t in results.items():
        pages = t["pages"]
        total = t["render"] + t["resize"] + t["encode"]
        print(
            f"PNG level {level}: {pages / total:5.2f} pages/s  "
            f"render {1e3 * t['render'] / pages:6.1f} ms ({t['render'] / total:4.0%})  "
            f"resize {1e3 * t['resize'] / pages:6.1f} ms ({t['resize'] / total:4.0%})  "
            f"encode {1e3 * t['encode'] / pages:6.1f} ms ({t['encode'] / total:4.0%})  "
            f"{t['bytes'] / pages / 1e3:6.0f} KB base64/page"
        )
    fast, default = results[1], results[6]
    print(
        f"level 1 vs 6: encode {default['encode'] / fast['encode']:.2f}x faster, "
        f"payload {fast['bytes'] / default['bytes']:.2f}x the size"
    )


if __name__ == "__main__":
    main()
