"""``dotsocr worker``: read the pages of jobs shared through PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def worker_command(
    server: Annotated[
        str | None, typer.Option("--server", help="Model server URL(s) (else the CPU engine).")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="auto, server or cpu (default: auto).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model profile (dotsocr models): dots.ocr.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The shared PostgreSQL (DOTSOCR_DATABASE_URL)."),
    ] = None,
    storage_url: Annotated[
        str | None,
        typer.Option("--storage-url", help="Shared folder or s3://bucket/prefix for the bytes."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local cache (and storage if none given).")
    ] = None,
    max_in_flight: Annotated[
        int | None, typer.Option(min=1, help="Pages this worker reads at once.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="This worker's name in leases (host-pid).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, help="Prometheus metrics port (0: none).")
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="Seconds to finish held pages on SIGTERM.")
    ] = 30.0,
) -> None:
    """Claim pages of shared jobs under leases and read them; run as many as you like, on
    any machines. Settings as for the gateway: these flags, then DOTSOCR_* variables."""
    import asyncio
    import logging

    from dotsocr.config import GatewaySettings
    from dotsocr.gateway.worker import run_worker

    given = {
        "server_url": server,
        "engine": engine,
        "model": model,
        "database_url": database_url,
        "storage_url": storage_url,
        "data_dir": data_dir,
        "max_in_flight": max_in_flight,
        "worker_id": name,
        "metrics_port": metrics_port,
    }
    settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run_worker(settings, grace))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_command)
