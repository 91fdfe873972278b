"""Documents the tests and benchmarks build on the fly."""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "multi_page.pdf"


def book(pages: int, folder: Path) -> Path:
    """A ``pages``-page PDF made by repeating the sample's five pages."""
    path = folder / f"book-{pages}.pdf"
    with pikepdf.open(SAMPLE) as source, pikepdf.new() as pdf:
        while len(pdf.pages) < pages:
            pdf.pages.extend(source.pages[: pages - len(pdf.pages)])
        buffer = io.BytesIO()
        pdf.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path
