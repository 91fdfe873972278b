"""Telling what a file is from its bytes, never from its name."""

from __future__ import annotations

from typing import Literal

Kind = Literal["pdf", "image", "html", "text", "unknown"]

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little endian
    b"MM\x00*",  # TIFF, big endian
)


def sniff(head: bytes) -> Kind:
    """Classify a file from its first kilobytes."""
    # Image signatures sit at byte 0; check them first, since an image's metadata may
    # quote "%PDF-", which the PDF spec lets start anywhere in the first 1024 bytes.
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<") and (b"<html" in text[:1024] or b"<!doctype" in text[:64]):
        return "html"
    if head and not any(b < 9 or 13 < b < 32 for b in head[:512]):
        return "text"
    return "unknown"
