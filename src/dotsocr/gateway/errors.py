"""One error shape for every 4xx and 5xx: ``{"error": {"status", "code", "message"}}``."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than success, with a message that says what to do."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}
