"""Outputs from OCR results: Markdown, plain text, versioned JSON, annotated pages."""

from dotsocr.render._common import to_png_bytes
from dotsocr.render.annotate import render_annotated
from dotsocr.render.json import SCHEMA_VERSION, json_schema, render_json
from dotsocr.render.markdown import PictureMode, RenderedMarkdown, render_markdown
from dotsocr.render.text import render_text

__all__ = [
    "SCHEMA_VERSION",
    "PictureMode",
    "RenderedMarkdown",
    "json_schema",
    "render_annotated",
    "render_json",
    "render_markdown",
    "render_text",
    "to_png_bytes",
]
