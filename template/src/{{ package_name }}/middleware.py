"""Pure ASGI middleware: request ids and one access line per request; a cap on body size."""

import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
CONTENT_LENGTH_HEADER = b"content-length"
# A caller's id is kept only if it is a short, printable token; anything else is replaced.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

request_id_var: ContextVar[str] = ContextVar("request_id", default="")

AccessLog = Callable[[str, str, int, float], None]
"""Writes one line for a served request: method, path, status, duration in milliseconds."""


def current_request_id() -> str:
    return request_id_var.get()


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase), or None."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value
    return None


def _incoming_request_id(scope: Scope) -> str:
    value = _header(scope, REQUEST_ID_HEADER)
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return secrets.token_hex(16)


class RequestContextMiddleware:
    """Reads or makes the request id, echoes it in `X-Request-ID`, logs one line per request."""

    def __init__(self, app: ASGIApp, log_access: AccessLog) -> None:
        self.app = app
        self.log_access = log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope)
        # Not reset afterwards: the server runs each request in its own task, so the value ends
        # with it, and the server's own error log for this request still carries the id.
        request_id_var.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status_code = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            self.log_access(scope["method"], scope["path"], status_code, duration_ms)


class BodySizeLimitMiddleware:
    """Answers 413 for a request body larger than `max_body_bytes`, declared or streamed."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _declared_length(scope)
        if declared is not None:
            # The server stops reading at Content-Length, so a body within it needs no counting.
            if declared > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the app, so the error handlers answer it with the envelope.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, receive_within_limit, send)

    def _detail(self) -> str:
        return f"Request body exceeds {self.max_body_bytes} bytes"

    def _too_large(self) -> JSONResponse:
        body = {
            "error": "PAYLOAD_TOO_LARGE",
            "detail": self._detail(),
            "request_id": current_request_id(),
        }
        return JSONResponse(body, status_code=413)


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, CONTENT_LENGTH_HEADER)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
