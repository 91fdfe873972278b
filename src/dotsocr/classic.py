"""The interface of the original ``dots_ocr_client.py`` script, kept for the people using it.

``DotsOCRClient`` answers as the old script did (dicts with ``success``, ``text`` and
``error``; never an exception for a bad file or a failing server) and ``main`` takes
its flags, but the work is the library's: the OpenAI engine with its retries and
context planning, the pipeline with its repair ladder, and the Markdown renderer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

from dotsocr import defaults
from dotsocr.document import open_document
from dotsocr.engines.base import EngineAnswer
from dotsocr.engines.choice import EngineSettings, open_engine
from dotsocr.engines.openai import OpenAIEngine, RetryPolicy
from dotsocr.errors import ConfigError, DotsOCRError
from dotsocr.layout import DocumentResult, PageStatus
from dotsocr.models import capped_profile
from dotsocr.pipeline import NO_TEXT, DocumentDone, Pipeline, PipelineOptions, Source
from dotsocr.render import render_markdown
from dotsocr.serve import probe

DEFAULT_URL = "http://localhost:8000"
HEALTH_TIMEOUT = 10.0  # a healthy server answers /health at once, even when busy
ONCE = RetryPolicy(attempts=1)  # questions about the server itself: answer now, not later
PROFILE = "dots.ocr"
PROMPT_MODES = ("layout_all", "layout_only", "ocr")  # grounding needs a box: `dotsocr ocr`

T = TypeVar("T")


class DotsOCRClient:
    """The original script's client, over the library.

    Args:
        base_url: the vLLM (OpenAI-compatible) server; default ``$DOTSOCR_SERVER_URL``,
            else http://localhost:8000.
        model: the served model name; default: the first the server lists.
        api_key: the server's API key; default ``$DOTSOCR_API_KEY``.
        timeout: seconds to wait for one page's answer.
        max_pixels: the server's pixel cap (``dotsocr plan`` prints it), when it is lower
            than the model's: pages are sent at that size, so that boxes map back exactly.
        server_timeout: seconds to wait for a server that does not answer (loading,
            restarting) before the pages fail.
        on_wait: told every few seconds while pages wait for such a server (the script
            prints it on stderr).

    Example:
        >>> client = DotsOCRClient("http://localhost:8000")
        >>> if client.health_check():
        ...     result = client.process_image("scan.png")
        ...     print(result["text"] if result["success"] else result["error"])
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 600,
        max_pixels: int | None = None,
        server_timeout: float = defaults.SERVER_TIMEOUT,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url or os.environ.get("DOTSOCR_SERVER_URL") or DEFAULT_URL
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("DOTSOCR_API_KEY")
        self.timeout = timeout
        self.max_pixels = max_pixels
        self.server_timeout = server_timeout
        self.on_wait = on_wait
        self.last_error: str | None = None  # why the last health_check said False

    def health_check(self) -> bool:
        """True when /health answers 200 and /v1/models lists the model; never raises."""
        self.last_error = None
        try:
            with probe.client(self.base_url, self.api_key, timeout=HEALTH_TIMEOUT) as http:
                problem = probe.why_not_ready(probe.look(http), self.model)
        except DotsOCRError as exc:  # a refused key, a malformed URL
            problem = str(exc)
        if problem:
            self.last_error = f"{self.base_url}: {problem}"
        return not problem

    def list_models(self) -> list[str]:
        """The model names the server serves.

        Raises:
            EngineError: the server is unreachable, refuses the key, or serves nothing yet.
        """
        return _run(self._served())

    def process_image(
        self, path: str | os.PathLike[str], prompt_mode: str = "layout_all"
    ) -> dict[str, Any]:
        """OCR an image or PDF (every page) into Markdown and cells; never raises.

        Returns:
            ``success`` (some page was read, and no page with ink came back without
            text), ``text`` (Markdown of all pages), ``cells`` (dicts with page, bbox,
            category, text), ``pages``, ``status`` (ok, partial, failed),
            ``processing_time`` (s), ``usage`` (tokens), ``model`` (what read it),
            ``warnings`` (lines naming the page) and ``error`` (None, or one line naming
            the file and what to do).
        """
        started = time.perf_counter()
        try:
            document, model = _run(self._ocr(Path(path), prompt_mode))
        except DotsOCRError as exc:
            message = str(exc)
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            return _image_result(started, error=message)
        return _image_result(started, document=document, model=model, label=str(path))

    def process_text(self, text: str, max_tokens: int = 512) -> dict[str, Any]:
        """Send a text-only chat message; never raises.

        Returns:
            ``success``, ``text`` (the model's reply), ``processing_time``, ``usage``,
            ``finish_reason`` and ``error``.
        """
        started = time.perf_counter()
        try:
            answer = _run(self._chat(text, max_tokens))
        except DotsOCRError as exc:
            return {
                "success": False, "text": "", "processing_time": _since(started),
                "usage": _usage(0, 0), "finish_reason": None, "error": str(exc),
            }  # fmt: skip
        return {
            "success": True,
            "text": answer.text,
            "processing_time": _since(started),
            "usage": _usage(answer.prompt_tokens or 0, answer.completion_tokens or 0),
            "finish_reason": answer.finish_reason,
            "error": None,
        }

    def _engine(self, *, any_model: bool = False) -> OpenAIEngine:
        """For questions about the server itself: answered now, not waited for."""
        return OpenAIEngine(
            self.base_url,
            api_key=self.api_key,
            model=None if any_model else self.model,
            timeout=self.timeout,
            retry=ONCE,
            server_timeout=None,
        )

    async def _served(self) -> list[str]:
        async with self._engine(any_model=True) as engine:
            assert engine.info is not None
            return list(engine.info.served)

    async def _ocr(self, path: Path, task: str) -> tuple[DocumentResult, str]:
        if task not in PROMPT_MODES:
            raise ConfigError(
                f"unknown prompt mode {task!r}: choose one of {', '.join(PROMPT_MODES)}"
            )
        await asyncio.to_thread(_check_readable, path)  # a bad file needs no server
        profile = capped_profile(PROFILE, self.max_pixels)
        options = PipelineOptions(task=task, keep_images=False)
        settings = EngineSettings(
            engine="server", server_url=self.base_url, api_key=self.api_key,
            served_model=self.model, server_timeout=self.server_timeout,
            answer_timeout=self.timeout,
        )  # fmt: skip
        async with AsyncExitStack() as stack:
            engine = await open_engine(settings, stack, self.on_wait)
            async for event in Pipeline(engine, profile, options).run([Source(str(path), path)]):
                if isinstance(event, DocumentDone):
                    if event.error:
                        raise DotsOCRError(event.error)
                    return event.result, event.result.model or engine.model
        raise AssertionError("the pipeline ended without a result")  # pragma: no cover

    async def _chat(self, text: str, max_tokens: int) -> EngineAnswer:
        async with self._engine() as engine:
            return await engine.chat(text, max_tokens=max_tokens)


def _check_readable(path: Path) -> None:
    """Open the document (lazily: no page is rendered) so a bad file fails before the server."""
    with open_document(path):
        pass


def _image_result(
    started: float,
    *,
    document: DocumentResult | None = None,
    model: str | None = None,
    label: str = "",
    error: str | None = None,
) -> dict[str, Any]:
    if document is None:
        return {
            "success": False, "text": "", "cells": [], "pages": 0, "status": "failed",
            "processing_time": _since(started), "usage": _usage(0, 0), "model": model,
            "warnings": [], "error": error,
        }  # fmt: skip
    failed = [p for p in document.pages if p.status is PageStatus.FAILED]
    warnings = [f"{label}: page {p.number}: {w}" for p in document.pages for w in p.warnings]
    text = render_markdown(document, pictures="omit").text
    unread = [w for p in document.pages for w in p.warnings if w == NO_TEXT]
    if failed:
        more = f" (and {len(failed) - 1} more pages failed)" if len(failed) > 1 else ""
        error = f"{label}: page {failed[0].number}: {failed[0].error}{more}"
    elif unread and not text.strip():
        error = f"{label}: no text was read, though the page is not blank: {NO_TEXT}"
    cells = [
        {"page": page.number, **cell.model_dump(exclude_none=True)}
        for page in document.pages
        for cell in page.cells
    ]
    for cell in cells:
        cell["bbox"] = list(cell["bbox"])
    return {
        "success": document.status != "failed" and not (unread and not text.strip()),
        "text": text,
        "cells": cells,
        "pages": len(document.pages),
        "status": document.status,
        "processing_time": _since(started),
        "usage": _usage(
            sum(p.prompt_tokens or 0 for p in document.pages),
            sum(p.completion_tokens or 0 for p in document.pages),
        ),
        "model": model,
        "warnings": warnings,
        "error": error,
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from code already inside a loop (Jupyter): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dots_ocr_client.py",
        description="Talk to a dots.ocr vLLM server (the original client's flags).",
    )
    parser.add_argument(
        "--url", help=f"server URL (default: $DOTSOCR_SERVER_URL, else {DEFAULT_URL})"
    )
    parser.add_argument("--model", help="served model name (default: the first listed)")
    parser.add_argument("--api-key", help="server API key (default: $DOTSOCR_API_KEY)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per page")
    parser.add_argument(
        "--max-pixels", type=int, help="the server's pixel cap, when lower than the model's"
    )
    parser.add_argument(
        "--server-timeout",
        type=float,
        default=defaults.SERVER_TIMEOUT,
        help="seconds to wait for a server that does not answer",
    )
    parser.add_argument(
        "--prompt-mode", default="layout_all", choices=PROMPT_MODES, help="what to ask for"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--health", action="store_true", help="is the server ready?")
    action.add_argument("--models", action="store_true", help="list the served models")
    action.add_argument("--image", metavar="FILE", help="OCR an image or PDF to Markdown")
    action.add_argument("--text", metavar="TEXT", help="send a text-only message")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The script: 0 on success, 1 on failure with one ``error:`` line on stderr."""
    args = _parser().parse_args(argv)
    client = DotsOCRClient(
        args.url, model=args.model, api_key=args.api_key, timeout=args.timeout,
        max_pixels=args.max_pixels, server_timeout=args.server_timeout,
        on_wait=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    if args.health:
        if client.health_check():
            print(f"healthy: {client.base_url} is ready")
            return 0
        return _fail(f"not healthy: {client.last_error}")
    if args.models:
        try:
            models = client.list_models()
        except DotsOCRError as exc:
            return _fail(str(exc))
        print("\n".join(models))
        return 0
    if args.image is not None:
        result = client.process_image(args.image, prompt_mode=args.prompt_mode)
        if result["success"]:
            sys.stdout.write(result["text"])
            usage = result["usage"]
            print(
                f"{args.image}: {result['pages']} page(s), {len(result['cells'])} cells, "
                f"{result['status']}, {result['processing_time']:.1f} s, tokens "
                f"{usage['prompt_tokens']:,} in, {usage['completion_tokens']:,} out "
                f"({result['model']})",
                file=sys.stderr,
            )
        if result["error"]:
            return _fail(result["error"])
        return 0
    result = client.process_text(args.text)
    if not result["success"]:
        return _fail(result["error"])
    print(result["text"])
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
