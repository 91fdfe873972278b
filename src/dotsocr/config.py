"""Settings in one place: flags, then environment (``DOTSOCR_*``), then a config file.

The gateway builds ``GatewaySettings`` once and hands it down; nothing reads the
environment on its own. The config file is TOML, named by ``DOTSOCR_CONFIG``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dotsocr import defaults

if TYPE_CHECKING:
    from dotsocr.engines.choice import EngineSettings

MB = 1024 * 1024


class GatewaySettings(BaseSettings):
    """How ``dotsocr gateway`` runs: its model server, storage, limits and security."""

    model_config = SettingsConfigDict(env_prefix="DOTSOCR_", extra="forbid")

    # The model server, or the embedded CPU engine.
    engine: Annotated[
        Literal["auto", "server", "cpu"],
        Field(description="auto: the server when one is set, else the CPU engine"),
    ] = "auto"
    server_timeout: Annotated[
        float,
        Field(ge=0, description="seconds a server that does not answer is waited for before "
              "its pages fail (they stay queued meanwhile)"),
    ] = defaults.SERVER_TIMEOUT  # fmt: skip
    fallback: Annotated[
        Literal["cpu"] | None,
        Field(description="cpu: pages the server cannot read go to the CPU engine"),
    ] = None
    server_url: Annotated[
        str | None,
        Field(description="OpenAI-compatible server, or several replicas separated by commas"),
    ] = None
    model: Annotated[
        str, Field(description="the model profile: a name from `dotsocr models`, or a hub id")
    ] = "dots.ocr"
    served_model: Annotated[
        str | None, Field(description="the model's name on the server (default: found)")
    ] = None
    server_api_key: Annotated[str | None, Field(description="the model server's key")] = None
    languages: Annotated[str, Field(description="CPU engine languages, e.g. eng+deu")] = "eng"
    text_layer: Annotated[
        Literal["auto", "never", "only"],
        Field(description="CPU engine: a PDF's own text where trusted (auto), never, or only"),
    ] = "auto"
    max_pixels: Annotated[
        int | None, Field(description="the model server's pixel cap (dotsocr plan prints it)")
    ] = None
    image_format: Annotated[
        Literal["png", "jpeg"],
        Field(description="pages go to the server as png (lossless) or jpeg (lossy, unmeasured)"),
    ] = "png"

    # Where and how it listens and keeps jobs.
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Annotated[Path, Field(description="job database and results")] = Path("dotsocr-data")
    retention_hours: Annotated[float, Field(gt=0, description="results kept this long")] = 24.0

    # Sharing jobs between gateways and workers (docs/scaling.md).
    database_url: Annotated[
        str | None,
        Field(description="PostgreSQL (postgresql://...) shared by gateways and workers; "
              "none: SQLite in the data folder, for one gateway"),
    ] = None  # fmt: skip
    storage_url: Annotated[
        str | None,
        Field(description="inputs and results: a shared folder or s3://bucket/prefix (the "
              "endpoint and keys from AWS_*); none: the data folder"),
    ] = None  # fmt: skip
    read_pages: Annotated[
        bool, Field(description="this gateway reads pages too; false: only `dotsocr worker`s do")
    ] = True
    lease_seconds: Annotated[
        float, Field(gt=0, description="a claimed page returns to the queue this long after "
                     "its worker stops renewing it")
    ] = 60.0  # fmt: skip
    worker_id: Annotated[
        str | None, Field(description="this process's name in leases (default: host-pid)")
    ] = None
    metrics_port: Annotated[
        int, Field(ge=0, description="`dotsocr worker`'s Prometheus port (0: none)")
    ] = 9090

    # Scheduling.
    max_in_flight: Annotated[
        int, Field(ge=1, description="pages in flight to the model server, all jobs together")
    ] = 16
    max_queued_pages: Annotated[
        int, Field(ge=1, description="pages waiting, all jobs together; past it: 503")
    ] = 20_000
    event_keep_alive: Annotated[
        float, Field(gt=0, description="seconds of silence before an event stream's keep-alive")
    ] = 15.0
    sync_timeout: Annotated[
        float, Field(gt=0, description="seconds /v1/parse waits before answering 504")
    ] = 120.0

    # Security and limits.
    api_keys: Annotated[
        list[str],
        NoDecode,
        Field(description="keys clients must send as Bearer tokens; none: no auth"),
    ] = []
    max_upload_bytes: Annotated[int, Field(ge=1)] = 100 * MB
    max_pages_per_job: Annotated[int, Field(ge=1)] = 5_000
    max_image_pixels: Annotated[int, Field(ge=1)] = defaults.MAX_IMAGE_PIXELS
    job_timeout: Annotated[float, Field(gt=0, description="seconds a job may run")] = 6 * 3600.0
    allow_urls: Annotated[bool, Field(description="accept documents by URL (off: SSRF)")] = False
    allow_private_urls: Annotated[
        bool, Field(description="also URLs and webhooks on private addresses (trusted nets)")
    ] = False
    webhook_attempts: Annotated[int, Field(ge=1)] = 5

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("DOTSOCR_CONFIG")
        if config and not Path(config).is_file():
            from dotsocr.errors import ConfigError

            raise ConfigError(f"DOTSOCR_CONFIG names {config}, which is not a file")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    def model_post_init(self, context: Any) -> None:
        from dotsocr.errors import ConfigError

        self.engine_settings()  # the engine choice's own checks, at start
        if not self.read_pages and not self.database_url:
            raise ConfigError(
                "read_pages is off but no DOTSOCR_DATABASE_URL is set: without a shared job "
                "database no worker could read this gateway's pages"
            )
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            scheme = self.database_url.split("://")[0] if "://" in self.database_url else ""
            raise ConfigError(  # never the rest of it: it may hold the password
                "DOTSOCR_DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@"
                f"host:5432/db), not {f'{scheme}://...' if scheme else 'what it is now'}"
            )

    def engine_settings(self) -> EngineSettings:
        """What ``open_engine`` needs, for the pages this process reads."""
        from dotsocr.engines.choice import EngineSettings

        return EngineSettings(
            engine=self.engine, server_url=self.server_url, api_key=self.server_api_key,
            served_model=self.served_model, languages=self.languages,
            text_layer=self.text_layer, concurrency=self.max_in_flight,
            server_timeout=self.server_timeout, fallback=self.fallback,
        )  # fmt: skip

    @property
    def worker_name(self) -> str:
        import socket

        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """``a,b``: keys from the environment come comma separated."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value
