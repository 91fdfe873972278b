"""``dotsocr gateway``: the REST API, with durable jobs, auth, limits and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Options the gateway and `dotsocr worker` share (the worker reads the same settings).
ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Model server URL(s) (else the CPU engine).")
]
EngineOpt = Annotated[str | None, typer.Option(help="auto, server or cpu (default: auto).")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model profile (dotsocr models): dots.ocr.")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL shared by gateways and workers."),
]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage-url", help="Shared folder or s3://bucket/prefix for the bytes."),
]
InFlightOpt = Annotated[
    int | None, typer.Option(min=1, help="Pages in flight to the model server.")
]


def gateway_command(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    server: ServerOpt = None,
    engine: EngineOpt = None,
    model: ModelOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Job database and results.")
    ] = None,
    database_url: DatabaseOpt = None,
    storage_url: StorageOpt = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="A key clients must send (repeat for more)."),
    ] = None,
    max_in_flight: InFlightOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the REST API (docs at /docs). Settings: these flags, then DOTSOCR_* variables,
    then the TOML file named by DOTSOCR_CONFIG."""
    import uvicorn

    from dotsocr.config import GatewaySettings
    from dotsocr.gateway.app import create_app
    from dotsocr.memory import tune_malloc

    given = {
        "host": host,
        "port": port,
        "server_url": server,
        "engine": engine,
        "model": model,
        "data_dir": data_dir,
        "database_url": database_url,
        "storage_url": storage_url,
        "api_keys": api_key,
        "max_in_flight": max_in_flight,
    }
    settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    tune_malloc()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,  # event streams do not end on their own
    )


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway_command)
