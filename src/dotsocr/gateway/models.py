"""The gateway's request and response bodies, shared with the SDK in ``dotsocr.client``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dotsocr import defaults

TASKS = {"layout": "layout_all", "layout-only": "layout_only", "ocr": "ocr"}
# Beyond these three (which every model takes, or falls back from), a task of the model's
# own: dots.mocr's spotting, PaddleOCR-VL's table... (GET /v1/info lists them).
TASK_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


def model_task(task: str) -> str:
    """The profile's name for a task as the API spells it."""
    return TASKS.get(task, task)


MAX_FILES = 100  # per request
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
# The form document.selection reads: N, N-, N-M or -M, comma separated, or "all". Checked
# here so a malformed selection is a 422, not an error on every file of the job.
_RANGE = r"(\d+\s*(-\s*\d*)?|-\s*\d+)"
PAGES_PATTERN = rf"^\s*([Aa][Ll][Ll]|{_RANGE}(\s*,\s*{_RANGE})*)?\s*$"


class ParseOptions(BaseModel):
    """What to do with the documents: the same for every file of a request."""

    model_config = ConfigDict(extra="forbid")

    task: Annotated[
        str,
        Field(
            description="layout: cells with boxes and text; layout-only: boxes; ocr: text; or "
            "a task of the model's own (GET /v1/info lists them)",
            pattern=TASK_PATTERN,
        ),
    ] = "layout"
    pages: Annotated[
        str | None,
        Field(
            description="page selection such as 1-3,7 (1-based); all when empty",
            max_length=200,
            pattern=PAGES_PATTERN,
        ),
    ] = None
    dpi: Annotated[float, Field(ge=36, le=600, description="PDF render resolution")] = defaults.DPI
    headers_footers: Annotated[
        bool, Field(description="keep page headers and footers in the Markdown")
    ] = False


class FileIn(BaseModel):
    """One document in a JSON body: its bytes in base64, or a URL when the server allows."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=255, description="for display only")] = "document"
    base64: Annotated[str | None, Field(description="the file's bytes, base64")] = None
    url: Annotated[str | None, Field(description="http(s) URL, if URL inputs are on")] = None


class JsonRequest(ParseOptions):
    """The JSON alternative to a multipart upload."""

    files: Annotated[list[FileIn], Field(min_length=1, max_length=MAX_FILES)]
    webhook: Annotated[
        str | None, Field(description="URL called with the job's status when it ends")
    ] = None


class FileStatus(BaseModel):
    index: int
    name: str
    pages: int
    selected: Annotated[
        str, Field(description="the page numbers being read, as ranges such as 1-3,7")
    ] = ""
    error: str | None = None


class Progress(BaseModel):
    total: int
    done: int
    failed: int
    pending: int


class JobLinks(BaseModel):
    self: str
    events: str
    result: str


class JobStatus(BaseModel):
    id: str
    state: JobState
    queue_position: Annotated[
        int | None, Field(description="jobs with pages waiting before this one's next page")
    ] = None
    pages: Progress
    files: list[FileStatus]
    created: float
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    links: JobLinks


class JobList(BaseModel):
    """This key's jobs, newest first."""

    jobs: list[JobStatus]


PageState = Literal["pending", "done", "failed"]


class PageLinks(BaseModel):
    self: str
    image: str


class PageView(BaseModel):
    """One page of a job: its result so far, as JSON, Markdown and display-ready HTML."""

    job: str
    file: int
    name: str
    page: Annotated[int, Field(description="1-based page number in the document")]
    state: PageState
    result: Annotated[
        dict[str, Any] | None,
        Field(description="the page as in the result's documents[].pages[]; null while pending"),
    ] = None
    markdown: str | None = None
    html: Annotated[
        str | None, Field(description="the Markdown as sanitized HTML, formulas as MathML")
    ] = None
    links: PageLinks


class Limits(BaseModel):
    max_upload_bytes: int
    max_files: int
    max_pages_per_job: int
    max_image_pixels: int


class Category(BaseModel):
    name: str
    color: Annotated[str, Field(description="the colour annotated pages draw it in, #rrggbb")]


class GatewayInfo(BaseModel):
    """What a client needs to know before sending: the model, its state, auth, limits."""

    version: str
    model: str
    engine: Annotated[str, Field(description="vllm (a model server) or cpu (embedded)")]
    ready: bool
    reason: Annotated[str | None, Field(description="why not ready")] = None
    queued_pages: int
    reading_pages: int
    auth: Annotated[
        bool, Field(description="requests need Authorization: Bearer KEY (and jobs are listed)")
    ]
    keep_alive: Annotated[
        float, Field(description="seconds between keep-alives on a quiet event stream")
    ]
    tasks: list[str]
    limits: Limits
    categories: list[Category]


class ParseResult(BaseModel):
    """A finished request: Markdown and layout JSON per document."""

    job: JobStatus
    markdown: str | None = None
    documents: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
