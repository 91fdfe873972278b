"""The REST gateway: documents in, Markdown and layout JSON out, sync or as durable jobs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, get_args

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from dotsocr import __version__
from dotsocr.config import GatewaySettings
from dotsocr.errors import DotsOCRError
from dotsocr.gateway.errors import ApiError
from dotsocr.gateway.jobs import JobManager, Upload
from dotsocr.gateway.metrics import GatewayMetrics
from dotsocr.gateway.models import (
    MAX_FILES,
    Category,
    ErrorResponse,
    FileIn,
    GatewayInfo,
    JobList,
    JobState,
    JobStatus,
    JsonRequest,
    Limits,
    PageView,
    ParseOptions,
    ParseResult,
)
from dotsocr.gateway.pages import page_image, page_view
from dotsocr.gateway.store import StoreError
from dotsocr.gateway.ui import mount_ui
from dotsocr.render.annotate import CATEGORY_COLORS

ANONYMOUS = "anonymous"
log = logging.getLogger("dotsocr.gateway")
ENVELOPE = 64 * 1024  # room for multipart headers and boundaries, or JSON names and options
FORM_FIELDS = ("task", "pages", "dpi", "headers_footers", "webhook")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)
}
UPLOAD_ERRORS = {**ERRORS, 415: {"model": ErrorResponse}}  # neither multipart nor JSON
FileIndex = Annotated[int, Path(ge=0, description="the file's index in the job, from 0")]
PageNumber = Annotated[int, Path(ge=1, description="page number in the document, from 1")]


def create_app(settings: GatewaySettings) -> FastAPI:
    metrics = GatewayMetrics()
    manager = JobManager(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.start()
        try:
            yield
        finally:
            await manager.stop()

    app = FastAPI(
        title="dotsocr gateway",
        version=__version__,
        description="Documents in, Markdown and layout JSON out: synchronous requests and "
        "durable jobs with per-page progress. Authenticate with `Authorization: Bearer KEY` "
        "when the server has keys.",
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.settings = settings
    keys = {hashlib.sha256(k.encode()).hexdigest()[:16]: k for k in settings.api_keys}

    def owner(request: Request) -> str:
        """The key's owner id; jobs are visible only to the key that made them."""
        if not keys:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            for owner_id, key in keys.items():
                if hmac.compare_digest(token.encode(), key.encode()):
                    return owner_id
        raise ApiError(
            401, "unauthorized", "missing or wrong API key: send Authorization: Bearer KEY"
        )

    # A default, not an Annotated alias: annotations are strings here and FastAPI resolves
    # them in the module, where this closure's ``owner`` does not exist.
    authenticated = Depends(owner)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> JSONResponse:
        """The shared job database is unreachable: nothing is lost, ask again shortly."""
        body = ApiError(503, "unavailable", f"{exc}: try again shortly").body()
        return JSONResponse(body, 503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Still one JSON shape: a bug of ours, or a full disk."""
        log.exception("unexpected error on %s", request.url.path)
        message = f"unexpected {type(exc).__name__}: {exc} (the gateway's log has the details)"
        return JSONResponse(ApiError(500, "internal", message).body(), 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(422, "invalid", _describe(exc.errors())).body(), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            ApiError(exc.status_code, code, str(exc.detail)).body(), exc.status_code
        )

    async def inputs(request: Request) -> tuple[list[Upload], ParseOptions, str | None]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            if _length(request) > settings.max_upload_bytes + ENVELOPE:
                raise _too_large(settings)
            return await _multipart(request, settings)
        if kind.startswith("application/json"):
            return await _json_body(request, settings)
        raise ApiError(
            415, "unsupported_media_type",
            "send multipart/form-data with files, or application/json with base64 files",
        )  # fmt: skip

    @app.post(
        "/v1/parse",
        summary="Read documents now",
        response_model=ParseResult,
        responses={
            **UPLOAD_ERRORS,
            409: {"model": ErrorResponse},  # deleted while we waited
            504: {"model": ErrorResponse},
            200: {"content": {"text/markdown": {"schema": {"type": "string"}}}},  # ?format=md
        },
        openapi_extra=_request_body(),
    )
    async def parse(
        request: Request,
        who: str = authenticated,
        format: Annotated[Literal["json", "md"], Query(description="md: Markdown text")] = "json",
    ) -> Any:
        """Upload files (multipart) or send them in JSON; the answer comes when every page
        is read, or 504 after the configured wait (the job goes on: poll its URL)."""
        uploads, options, webhook = await inputs(request)
        job_id = await manager.submit(who, uploads, options, webhook)
        if not await manager.wait(job_id, settings.sync_timeout):
            raise ApiError(
                504, "timeout",
                f"not finished within {settings.sync_timeout:g} s; the job goes on: poll "
                f"/v1/jobs/{job_id}, or send large documents to POST /v1/jobs",
            )  # fmt: skip
        result = await asyncio.to_thread(manager.render, job_id, format)
        if result is None:
            raise ApiError(409, "cancelled", f"job {job_id} was deleted before it finished")
        if format == "md":
            return PlainTextResponse(result, media_type="text/markdown")
        return result

    @app.post(
        "/v1/jobs",
        summary="Submit documents as a job",
        status_code=202,
        response_model=JobStatus,
        responses=UPLOAD_ERRORS,
        openapi_extra=_request_body(),
    )
    async def submit(request: Request, response: Response, who: str = authenticated) -> Any:
        """Answers at once with the job's id and URLs; pages are read in fair turns."""
        uploads, options, webhook = await inputs(request)
        job_id = await manager.submit(who, uploads, options, webhook)
        response.headers["Location"] = f"/v1/jobs/{job_id}"
        return await asyncio.to_thread(manager.status, job_id)

    def visible(job_id: str, who: str) -> str:
        if manager.owner(job_id) != who:
            raise ApiError(404, "not_found", f"no job {job_id!r} for this key")
        return job_id

    @app.get(
        "/v1/jobs", response_model=JobList, responses={**ERRORS, 403: {"model": ErrorResponse}}
    )
    async def job_list(
        who: str = authenticated,
        limit: Annotated[int, Query(ge=1, le=200, description="at most this many")] = 50,
    ) -> Any:
        """This key's jobs, newest first (finished ones until their retention ends). A
        server without keys lists none: everyone would see everyone's documents."""
        if not keys:
            raise ApiError(
                403, "no_keys",
                "jobs are listed per API key and this server has none: keep the ids that "
                "POST /v1/jobs returns, or start the gateway with --api-key",
            )  # fmt: skip

        def listed() -> JobList:  # a query per job: off the event loop
            ids = manager.store.jobs_of(who, limit)
            return JobList(jobs=[s for job_id in ids if (s := manager.status(job_id))])

        return await asyncio.to_thread(listed)

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=ERRORS)
    async def job_status(job_id: str, who: str = authenticated) -> Any:
        """State, queue position, pages done of total, failures, timings and tokens."""
        return await asyncio.to_thread(lambda: manager.status(visible(job_id, who)))

    @app.get(
        "/v1/jobs/{job_id}/events",
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    )
    async def job_events(job_id: str, who: str = authenticated) -> StreamingResponse:
        """Server-sent events: one ``page`` event per finished page, then ``done``."""
        visible(job_id, who)

        async def stream() -> AsyncIterator[str]:
            async for event in manager.events(job_id):
                if event["event"] == "keep-alive":
                    yield ": keep-alive\n\n"  # an SSE comment: clients ignore it
                else:
                    yield f"event: {event['event']}\ndata: {json.dumps(event)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get(
        "/v1/jobs/{job_id}/result",
        responses={
            **ERRORS,
            200: {
                "content": {
                    "application/json": {},
                    "text/markdown": {},
                    "application/zip": {},
                }
            },
        },
    )
    async def job_result(
        job_id: str,
        who: str = authenticated,
        format: Annotated[Literal["json", "md", "zip"], Query()] = "json",
    ) -> Response:
        """The results so far (partial while the job runs, complete after)."""
        visible(job_id, who)
        result = await asyncio.to_thread(manager.render, job_id, format)
        if result is None:
            raise ApiError(404, "not_found", f"no job {job_id!r} for this key")
        if format == "md":
            return PlainTextResponse(result, media_type="text/markdown")
        if format == "zip":
            return Response(
                result, media_type="application/zip",
                headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'},
            )  # fmt: skip
        return JSONResponse(result.model_dump(mode="json"))

    @app.get(
        "/v1/jobs/{job_id}/files/{file}/pages/{page}", response_model=PageView, responses=ERRORS
    )
    async def page_result(
        job_id: str,
        file: FileIndex,
        page: PageNumber,
        who: str = authenticated,
    ) -> Any:
        """One page: pending, or its result as JSON, Markdown and sanitized HTML."""
        visible(job_id, who)
        view = await asyncio.to_thread(page_view, manager, job_id, file, page)
        if view is None:
            raise _no_page(job_id, file, page)
        return view

    @app.get(
        "/v1/jobs/{job_id}/files/{file}/pages/{page}/image",
        responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
        response_class=Response,
    )
    async def page_picture(
        job_id: str,
        file: FileIndex,
        page: PageNumber,
        who: str = authenticated,
        width: Annotated[int | None, Query(ge=16, le=10_000, description="scale down")] = None,
    ) -> Response:
        """The page as the model saw it: the frame its boxes are in, scaled to fit."""
        visible(job_id, who)
        try:
            image = await asyncio.to_thread(page_image, manager, job_id, file, page, width)
        except DotsOCRError as exc:
            raise ApiError(404, "no_image", f"page {page} cannot be shown: {exc}") from None
        if image is None:
            raise _no_page(job_id, file, page)
        return Response(image, media_type="image/jpeg", headers={"Cache-Control": "private"})

    @app.delete("/v1/jobs/{job_id}", status_code=204, responses=ERRORS)
    async def job_delete(job_id: str, who: str = authenticated) -> Response:
        """Cancel the job (pages not yet read are dropped) and remove its files."""
        await manager.cancel(visible(job_id, who))
        return Response(status_code=204)

    @app.get("/health", summary="Alive")
    async def health() -> dict[str, str]:
        return {"status": "alive", "version": __version__}

    @app.get("/ready", summary="Ready to read pages", responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        if not manager.ready:
            raise ApiError(503, "not_ready", f"model server: {manager.engine_error}", retry_after=5)
        return {"status": "ready", "queued_pages": len(manager.queue)}

    @app.get("/v1/info", response_model=GatewayInfo, summary="Model, state, auth and limits")
    async def info() -> Any:
        """Open to all (no key needed), so a client can learn whether it needs one."""
        return GatewayInfo(
            version=__version__,
            model=manager.model,
            engine="cpu" if manager.embedded else "vllm",
            ready=manager.ready,
            reason=None if manager.ready else f"model server: {manager.engine_error}",
            queued_pages=len(manager.queue),
            reading_pages=manager.reading,
            auth=bool(keys),
            keep_alive=settings.event_keep_alive,
            tasks=manager.tasks,
            limits=Limits(
                max_upload_bytes=settings.max_upload_bytes,
                max_files=MAX_FILES,
                max_pages_per_job=settings.max_pages_per_job,
                max_image_pixels=settings.max_image_pixels,
            ),
            categories=[
                Category(name=name, color="#{:02x}{:02x}{:02x}".format(*rgb))
                for name, rgb in CATEGORY_COLORS.items()
            ],
        )

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        counts = manager.store.state_counts()
        for state in get_args(JobState):  # zero too: a state with no job left reads 0
            metrics.job_states.labels(state).set(counts.get(state, 0))
        metrics.queue_depth.set(len(manager.queue))  # shared: the whole queue, for scaling
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The default schema, plus the models the JSON request body refers to."""
        if app.openapi_schema is None:
            schema = default_openapi()
            defs = JsonRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                defs.get("$defs", {})
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    mount_ui(app)
    return app


def _no_page(job_id: str, file: int, page: int) -> ApiError:
    return ApiError(404, "not_found", f"job {job_id} reads no page {page} of file {file}")


def _too_large(settings: GatewaySettings) -> ApiError:
    megabytes = settings.max_upload_bytes / (1024 * 1024)
    shown = f"{megabytes:,.0f}" if megabytes >= 10 else f"{megabytes:.2g}"
    return ApiError(
        413, "too_large",
        f"the upload is over the limit of {shown} MB: split it, or send the documents as "
        "separate jobs",
    )  # fmt: skip


def _capped(request: Request, limit: int, settings: GatewaySettings) -> Request:
    """The same request, answered 413 as soon as its body passes ``limit`` bytes: a chunked
    upload has no Content-Length to check first."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _too_large(settings)
        return message

    return Request(request.scope, receive)


def _length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(400, "bad_request", "the Content-Length header is not a number") from None


async def _multipart(
    request: Request, settings: GatewaySettings
) -> tuple[list[Upload], ParseOptions, str | None]:
    limited = _capped(request, settings.max_upload_bytes + ENVELOPE, settings)
    form = await limited.form(max_files=MAX_FILES, max_fields=20)
    try:
        return await _form_inputs(form, settings)
    finally:
        await form.close()


async def _form_inputs(
    form: FormData, settings: GatewaySettings
) -> tuple[list[Upload], ParseOptions, str | None]:
    uploads: list[Upload] = []
    total = 0
    for item in form.getlist("files") + form.getlist("file"):
        if isinstance(item, str):
            raise ApiError(422, "invalid", "files: send files, not text fields")
        data = await item.read(settings.max_upload_bytes + 1)
        total += len(data)
        if total > settings.max_upload_bytes:
            raise _too_large(settings)
        uploads.append(Upload(item.filename or "document", data))
    if not uploads:
        raise ApiError(422, "invalid", "no file: send one or more as 'files' form fields")
    unknown = sorted(set(form.keys()) - {"files", "file", *FORM_FIELDS})
    if unknown:
        raise ApiError(422, "invalid", f"unknown form fields: {', '.join(unknown)}")
    fields = {k: form[k] for k in FORM_FIELDS if k in form and k != "webhook"}
    try:
        options = ParseOptions.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(422, "invalid", _describe(exc.errors())) from None
    webhook = form.get("webhook")
    return uploads, options, await _webhook(webhook if isinstance(webhook, str) else None, settings)


async def _json_body(
    request: Request, settings: GatewaySettings
) -> tuple[list[Upload], ParseOptions, str | None]:
    limit = settings.max_upload_bytes * 4 // 3 + ENVELOPE  # base64: 4/3 of the bytes
    if _length(request) > limit:
        raise _too_large(settings)
    raw = await _capped(request, limit, settings).body()
    try:
        body = JsonRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, "invalid", _describe(exc.errors())) from None
    uploads: list[Upload] = []
    left = settings.max_upload_bytes  # all files together, as for a multipart upload
    for item in body.files:
        upload = await _file(item, settings, left)
        left -= len(upload.data)
        if left < 0:
            raise _too_large(settings)
        uploads.append(upload)
    options = ParseOptions(**body.model_dump(exclude={"files", "webhook"}))
    return uploads, options, await _webhook(body.webhook, settings)


async def _file(item: FileIn, settings: GatewaySettings, budget: int) -> Upload:
    """One file's bytes; a download stops at ``budget``, what the upload limit leaves."""
    if (item.base64 is None) == (item.url is None):
        raise ApiError(422, "invalid", f"{item.name}: give exactly one of base64 and url")
    if item.base64 is not None:
        if len(item.base64) > settings.max_upload_bytes * 4 // 3 + 4:
            raise _too_large(settings)
        try:
            return Upload(item.name, base64.b64decode(item.base64, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_base64", f"{item.name}: the base64 does not decode") from None
    if not settings.allow_urls:
        raise ApiError(
            400, "urls_off", "URL inputs are off on this server: upload the file instead"
        )
    from dotsocr.gateway.fetch import URLRefused, fetch_url

    try:
        data, name = await fetch_url(
            item.url or "", max_bytes=max(budget, 0),
            allow_private=settings.allow_private_urls,
        )  # fmt: skip
    except URLRefused as exc:
        raise ApiError(400, "url_refused", str(exc)) from None
    return Upload(item.name if item.name != "document" else name, data)


async def _webhook(url: str | None, settings: GatewaySettings) -> str | None:
    """The webhook URL, refused now rather than at the job's end when we would not call it."""
    if not url:
        return None
    from dotsocr.gateway.fetch import URLRefused, check_public

    if len(url) > 2000:
        raise ApiError(422, "invalid", "webhook: a URL of at most 2000 characters")
    try:
        await check_public(url, allow_private=settings.allow_private_urls)
    except URLRefused as exc:
        raise ApiError(400, "webhook_refused", f"webhook: {exc}") from None
    return url


def _describe(errors: Any) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def _request_body() -> dict[str, Any]:
    """Both ways to send documents, for the OpenAPI schema (the handler reads the body)."""
    json_schema = JsonRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    json_schema.pop("$defs", None)
    form = {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            **{name: prop for name, prop in ParseOptions.model_json_schema()["properties"].items()},
            "webhook": {"type": "string", "description": "URL called when the job ends"},
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": form},
                "application/json": {"schema": json_schema},
            },
        }
    }
