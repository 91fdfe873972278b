"""``dotsocr gpus``: the NVIDIA GPUs vLLM would see here, before planning or serving."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command()
    def gpus(
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON array, sizes in bytes.")
        ] = False,
    ) -> None:
        """List the GPUs vLLM would use here (NVML, else nvidia-smi; CUDA_VISIBLE_DEVICES)."""
        import json

        from dotsocr.serve.gpu import discover

        found = discover()  # NoGPU becomes one 'error: ...' line in cli.main
        if as_json:
            typer.echo(json.dumps([gpu.to_dict() for gpu in found], indent=2))
        else:
            for gpu in found:
                typer.echo(gpu.describe())
