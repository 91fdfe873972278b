"""Expanding the paths a user names into the files to read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from dotsocr.errors import NotADocument

DOCUMENT_SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)


def walk_folder(folder: Path) -> Iterator[Path]:
    """Document files under ``folder``, recursively and sorted; hidden ones skipped."""
    for child in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in child.relative_to(folder).parts)
        if child.is_file() and not hidden and child.suffix.lower() in DOCUMENT_SUFFIXES:
            yield child


def expand_paths(paths: Iterable[Path]) -> Iterator[Path | NotADocument]:
    """Files as given; folders walked recursively for document suffixes, in sorted order.

    A named file is read whatever its name (its type comes from its bytes); inside a
    folder only files with a document suffix are taken, and hidden ones are skipped. A
    folder with no such file yields an error in its place, so that it is not silently
    passed over.
    """
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        found = False
        for child in walk_folder(path):
            found = True
            yield child
        if not found:
            yield NotADocument(str(path), "no PDF or image files in this folder")
