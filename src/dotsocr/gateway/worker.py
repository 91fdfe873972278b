"""``dotsocr worker``: reads the pages of shared jobs, beside any number of others.

A worker is the gateway's job manager without the HTTP side: it claims pages from the
PostgreSQL queue under leases, reads them through the model server, records them and
ends the jobs whose last page it read (webhooks included). SIGTERM stops it cleanly: it
claims no more, finishes the pages it holds for up to ``grace`` seconds, and gives the
rest back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from dotsocr.config import GatewaySettings
from dotsocr.errors import ConfigError
from dotsocr.gateway.jobs import JobManager
from dotsocr.gateway.metrics import GatewayMetrics

log = logging.getLogger("dotsocr.worker")


async def run_worker(settings: GatewaySettings, grace: float = 30.0) -> None:
    if not settings.database_url:
        raise ConfigError(
            "dotsocr worker reads shared jobs: set DOTSOCR_DATABASE_URL (or --database-url) "
            "to the PostgreSQL database the gateways use"
        )
    metrics = GatewayMetrics()
    manager = JobManager(settings.model_copy(update={"read_pages": True}), metrics)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.start()
    log.info(
        "worker %s reading pages with %s, %d at a time",
        settings.worker_name, "the CPU engine" if manager.embedded else settings.server_url,
        settings.max_in_flight,
    )  # fmt: skip
    try:
        await stop.wait()
        log.info("stopping: finishing the pages in hand (up to %.0f s)", grace)
        await manager.drain(grace)
    finally:
        await manager.stop()
