"""A stand-in for vLLM's OpenAI server: a real HTTP server on loopback with injectable faults.

It speaks the endpoints and error bodies the real server does (checked against it in
tests/test_vllm_server.py) for the faults a real server cannot be made to show on
demand: 500s, 503s with Retry-After, dropped connections, answers slower than the
client's timeout, answers cut at max_tokens, looping answers.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, UnidentifiedImageError

LAYOUT_ANSWER = json.dumps(
    [
        {"bbox": [10, 10, 200, 40], "category": "Title", "text": "# Stand-in"},
        {"bbox": [10, 60, 400, 120], "category": "Text", "text": "Answered by the stand-in."},
    ]
)
FAULTS = ("500", "503", "503-bare", "429", "drop", "slow", "truncated", "loop")


@dataclass
class StandIn:
    """Configuration and observations; the server reads it on every request."""

    model: str = "model"
    max_model_len: int = 4096
    api_key: str | None = None
    answer: str = LAYOUT_ANSWER
    latency: float = 0.0
    capacity: int = 64  # requests answered at once; the rest wait, as in vLLM's queue
    slow_seconds: float = 5.0
    retry_after: str = "0.2"
    faults: deque[str] = field(default_factory=deque)
    record: bool = True  # keep request bodies for tests to read (benchmarks turn it off)
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(self.capacity)


def error_body(status: int, message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: StandIn

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._send(401, error_body(401, "Unauthorized", "AuthenticationError"))
            return False
        return True

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "")
        elif self.path == "/version":
            self._send(200, {"version": "stand-in"})
        elif self.path == "/v1/models":
            if self._authorised():
                entry = {
                    "id": self.state.model,
                    "object": "model",
                    "owned_by": "vllm",
                    "root": self.state.model,
                    "max_model_len": self.state.max_model_len,
                }
                self._send(200, {"object": "list", "data": [entry]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, error_body(400, "Invalid JSON", "BadRequestError"))
            return
        if self.path == "/tokenize":
            text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
            self._send(
                200, {"count": len(text) // 4 + 3, "max_model_len": self.state.max_model_len}
            )
        elif self.path == "/v1/chat/completions":
            if self._authorised():
                self._chat(body)
        else:
            self._send(404, {"detail": "Not Found"})

    def _chat(self, body: dict[str, Any]) -> None:
        state = self.state
        with state.lock:
            if state.record:
                state.requests.append(body)
            state.arrivals.append(time.monotonic())
            fault = state.faults.popleft() if state.faults else None
        if fault in ("500", "503", "503-bare", "429"):
            status = int(fault[:3])
            headers = {"Retry-After": state.retry_after} if fault in ("503", "429") else None
            kind = {500: "InternalServerError", 503: "ServiceUnavailable", 429: "RateLimit"}
            self._send(status, error_body(status, "injected fault", kind[status]), headers)
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if body.get("model") != state.model:
            message = (
                f"The model `{body.get('model')}` does not exist. Valid aliases: {state.model}."
            )
            self._send(404, error_body(404, message, "NotFoundError", "model"))
            return
        max_tokens = int(body.get("max_tokens") or 16)
        if max_tokens > state.max_model_len:
            message = (
                f"max_tokens={max_tokens} cannot be greater than max_model_len="
                f"{state.max_model_len}. Please request fewer output tokens."
            )
            self._send(400, error_body(400, message, "BadRequestError", "max_tokens"))
            return
        try:
            prompt_tokens = self._prompt_tokens(body)
        except ValueError as exc:
            self._send(400, error_body(400, str(exc), "BadRequestError"))
            return
        if prompt_tokens > state.max_model_len:
            message = (
                f"Input length ({prompt_tokens}) exceeds model's maximum context length "
                f"({state.max_model_len})."
            )
            self._send(400, error_body(400, message, "BadRequestError"))
            return
        with state.slots:
            with state.lock:
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            try:
                time.sleep(state.slow_seconds if fault == "slow" else state.latency)
            finally:
                with state.lock:
                    state.in_flight -= 1
        text, finish = self._answer(fault, max_tokens)
        self._send(
            200,
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "model": state.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": prompt_tokens + len(text) // 4,
                },
            },
        )

    def _unknown_model(self, body: dict[str, Any]) -> None:
        message = (
            f"The model `{body.get('model')}` does not exist. Valid aliases: {self.state.model}."
        )
        self._send(404, error_body(404, message, "NotFoundError", "model"))

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        """Image tokens from the pixels sent (one per 28x28), plus about one per 4 characters."""
        tokens = 0
        for message in body.get("messages", []):
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for part in parts:
                if part.get("type") == "text":
                    tokens += len(part.get("text") or "") // 4
                elif part.get("type") == "image_url":
                    image = _decode_image(part["image_url"]["url"])
                    tokens += (image.width // 28) * (image.height // 28)
        return tokens

    def _answer(self, fault: str | None, max_tokens: int) -> tuple[str, str]:
        if fault == "loop":
            cells = [
                {"bbox": [0, i, 10, i + 10], "category": "Text", "text": "loop"} for i in range(60)
            ]
            return json.dumps(cells)[: max_tokens * 4], "length"
        text = self.state.answer
        if fault == "truncated" or len(text) > max_tokens * 4:
            return text[: min(len(text) // 2, max_tokens * 4)], "length"
        return text, "stop"


def _decode_image(url: str) -> Image.Image:
    payload = url.split(",", 1)[1] if url.startswith("data:") else url
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Non-base64 digit found") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"Failed to load image: {exc}") from None
    return image


def start(state: StandIn) -> ThreadingHTTPServer:
    """Serve ``state`` on a free loopback port in a daemon thread; sets ``state.url``."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
