"""``dotsocr cache``: the models on this disk, whether they are whole, and what serving costs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dotsocr.serve.cache import CacheReport, ModelEntry

MODEL_DIRS_ENV = "DOTSOCR_MODEL_DIRS"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command()
    def cache(
        cache_dir: Annotated[
            Path | None,
            typer.Option("--cache-dir", help="Hugging Face hub cache (default: HF_HUB_CACHE)."),
        ] = None,
        paths: Annotated[
            list[Path] | None,
            typer.Option(
                "--path",
                help=f"A model folder, or a folder of them (repeatable; also ${MODEL_DIRS_ENV}, "
                "separated by ':').",
            ),
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                help="Print only the local folder of this model (org/name or a folder), "
                "for serving offline.",
            ),
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object, sizes in bytes.")
        ] = False,
    ) -> None:
        """List cached models: size, completeness, vLLM support and estimated GPU memory.

        Exit status: 0 when every model listed is complete, 1 when any is incomplete
        (missing or cut weight files, broken config.json, interrupted download).
        """
        from dotsocr.serve import cache as analyzer

        if model is not None:  # ServeError becomes one 'error: ...' line in cli.main
            typer.echo(str(analyzer.local_path(model, cache_dir)))
            return
        folders = [*(paths or []), *analyzer.folders_from_env(os.environ.get(MODEL_DIRS_ENV))]
        report = analyzer.scan(cache_dir, folders)
        if as_json:
            typer.echo(report.model_dump_json(indent=2))
        elif not report.models:
            places = ", ".join(str(p) for p in (report.cache_dir, *report.folders))
            typer.echo(f"no models in {places}")
        else:
            _print_report(report)
        raise typer.Exit(0 if report.complete else 1)


def _print_report(report: CacheReport) -> None:
    """A table of the models, then one line per problem."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=None if sys.stdout.isatty() else 200)
    where = f" and {len(report.folders)} folder(s)" if report.folders else ""
    table = Table(title=f"Models in {report.cache_dir}{where}", title_justify="left")
    for heading in ("model", "revision", "size", "complete?", "architecture", "vLLM?"):
        table.add_column(heading)
    table.add_column("est. memory", justify="right")
    for entry in report.models:
        table.add_row(
            *(
                Text(cell)
                for cell in (
                    entry.model_id,
                    _revision(entry),
                    _size(entry.size_bytes),
                    "yes" if entry.complete else "NO",
                    ", ".join(entry.architectures) or "-",
                    entry.vllm,
                    _size(entry.estimated_gpu_bytes),
                )
            )
        )
    console.print(table)
    for entry in report.models:
        for line in entry.problem_lines():
            typer.echo(f"problem: {line}")
        if entry.vllm_hint and not entry.problems:
            typer.echo(f"note: {entry.label}: {entry.vllm_hint}")


def _revision(entry: ModelEntry) -> str:
    if entry.source == "folder":
        return "(folder)"
    if not entry.revision:
        return "-"
    refs = f" ({', '.join(entry.refs)})" if entry.refs else ""
    return entry.revision[:12] + refs


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"
