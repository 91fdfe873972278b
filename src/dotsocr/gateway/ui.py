"""The web page at /ui: static files with no build step, using the public API like any client.

Why not Gradio: it would bring a second web framework and its own queue beside ours, call
Python functions instead of the API (so the page could do what API clients cannot), and
weigh far more than three small files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
# The page shows text a model read from untrusted documents: even if sanitizing missed
# something, no inline script, no other origin and no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag), so an upgraded gateway serves its page
}


def mount_ui(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    @app.get("/ui", include_in_schema=False)
    async def to_ui() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.middleware("http")
    async def secure(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/ui/"):
            response.headers.update(SECURITY_HEADERS)
        return response

    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
