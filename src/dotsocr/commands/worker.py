"""``dotsocr worker``: read the pages of jobs shared through PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dotsocr.commands.gateway import (
    DatabaseOpt,
    EngineOpt,
    InFlightOpt,
    ModelOpt,
    ServerOpt,
    StorageOpt,
)


def worker_command(
    server: ServerOpt = None,
    engine: EngineOpt = None,
    model: ModelOpt = None,
    database_url: DatabaseOpt = None,
    storage_url: StorageOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local cache (and storage if none given).")
    ] = None,
    max_in_flight: InFlightOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="This worker's name in leases (host-pid).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Metrics address (0.0.0.0 for scrapes from elsewhere).")
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
    from dotsocr.memory import tune_malloc

    tune_malloc()

    given = {
        "server_url": server,
        "engine": engine,
        "model": model,
        "database_url": database_url,
        "storage_url": storage_url,
        "data_dir": data_dir,
        "max_in_flight": max_in_flight,
        "worker_id": name,
        "host": host,
        "metrics_port": metrics_port,
    }
    settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run_worker(settings, grace))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_command)
