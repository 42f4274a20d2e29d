"""Pure ASGI middleware: request ids and one access line per request; a cap on head size; a cap on
requests at once; CORS; a cap on body size and on the time to receive it."""

import asyncio
import time

from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .logging import access_log
from .request_context import (
    REQUEST_ID_HEADER,
    AccessLog,
    header,
    request_id_from,
    request_id_var,
)
from .settings import CoreSettings

# Past the cap on requests at once these are still served: a probe must see the service's health,
# and restarting a busy service would not make it less busy.
CAP_EXEMPT_PREFIX = "/health/"
RETRY_SOON = {"Retry-After": "1"}
# A refused body is left unread: the server closes the connection after the answer, and says so,
# so that the client does not send its next request on it.
CLOSE = {"Connection": "close"}
CONTENT_LENGTH_HEADER = b"content-length"
TRANSFER_ENCODING_HEADER = b"transfer-encoding"


class RequestContextMiddleware:
    """Reads or makes the request id, echoes it in `X-Request-ID`, logs one line per request."""

    def __init__(self, app: ASGIApp, log_access: AccessLog) -> None:
        self.app = app
        self.log_access = log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = request_id_from(header(scope, REQUEST_ID_HEADER))
        # Not reset afterwards: the server runs each request in its own task, so the value ends
        # with it, and the server's own error log for this request still carries the id.
        request_id_var.set(request_id)
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status_code = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            self.log_access(scope["method"], scope["path"], status_code, duration_ms)


class HeadSizeLimitMiddleware:
    """Answers 431 for a request whose head (request line and headers) is larger than
    `max_header_bytes`, counted whole, as the server parsed it: a server's own bound counts its
    reads, not the head, and lets a larger one through."""

    def __init__(self, app: ASGIApp, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _head_size(scope) > self.max_header_bytes:
            detail = f"Request head exceeds {self.max_header_bytes} bytes"
            response = error_response(431, "REQUEST_HEADER_FIELDS_TOO_LARGE", detail, headers=CLOSE)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _head_size(scope: Scope) -> int:
    """The head's bytes: `METHOD target HTTP/1.1` and `name: value`, each line with its CRLF,
    and the empty line that ends it."""
    target: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    target_size = len(target) + (len(query) + 1 if query and b"?" not in target else 0)
    request_line = len(scope["method"]) + 1 + target_size + len(" HTTP/1.1\r\n")
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    return request_line + sum(len(name) + len(value) + 4 for name, value in headers) + 2


class ConcurrencyLimitMiddleware:
    """Past `limit` requests at once in this worker, answers 503 with `Retry-After`: a flood waits
    at the door rather than queueing for the database pool and timing out inside."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CAP_EXEMPT_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            detail = "The service is at its limit of requests at once; retry shortly"
            response = error_response(503, "SERVICE_UNAVAILABLE", detail, headers=RETRY_SOON)
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyLimitMiddleware:
    """Answers 413 for a request body larger than `max_body_bytes`, declared or streamed, and 408
    for one not received in whole within `timeout_seconds` of its head: a client that sends a
    body slowly, or never ends it, holds its slot under the cap on requests at once for that long
    at most, whatever the server."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _declared_length(scope)
        chunked = header(scope, TRANSFER_ENCODING_HEADER) is not None
        if declared is None and not chunked:
            # Neither header: HTTP/1.1 says the request has no body (a GET, say).
            await self.app(scope, receive, send)
            return
        if declared is not None and chunked:
            # Where a server passes both on, its body is the chunked one, whatever Content-Length
            # says: how requests are smuggled past a proxy that reads the other. Refused.
            detail = "Content-Length and Transfer-Encoding together are refused"
            response = error_response(400, "BAD_REQUEST", detail, headers=CLOSE)
            await response(scope, receive, send)
            return
        if declared is not None and declared > self.max_body_bytes:
            response = error_response(413, "PAYLOAD_TOO_LARGE", self._size_detail(), headers=CLOSE)
            await response(scope, receive, send)
            return

        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        received = 0

        async def receive_within_limits() -> Message:
            nonlocal received
            # Errors are raised inside the app, so the error handlers answer with the envelope.
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, self._time_detail(), headers=CLOSE) from None
            # The server stops reading at Content-Length, so a declared body needs no counting.
            if message["type"] == "http.request" and declared is None:
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, self._size_detail(), headers=CLOSE)
            return message

        await self.app(scope, receive_within_limits, send)

    def _size_detail(self) -> str:
        return f"Request body exceeds {self.max_body_bytes} bytes"

    def _time_detail(self) -> str:
        return f"Request body not received within {self.timeout_seconds:g} seconds"


def _declared_length(scope: Scope) -> int | None:
    value = header(scope, CONTENT_LENGTH_HEADER)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def request_context(app: ASGIApp, settings: CoreSettings) -> ASGIApp:
    return RequestContextMiddleware(app, log_access=access_log(settings))


def head_size_limit(app: ASGIApp, settings: CoreSettings) -> ASGIApp:
    return HeadSizeLimitMiddleware(app, max_header_bytes=settings.max_header_bytes)


def concurrency_limit(app: ASGIApp, settings: CoreSettings) -> ASGIApp:
    return ConcurrencyLimitMiddleware(app, limit=settings.max_connections)


def cors(app: ASGIApp, settings: CoreSettings) -> ASGIApp:
    if not settings.allowed_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=settings.allowed_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID"],
    )


def body_limit(app: ASGIApp, settings: CoreSettings) -> ASGIApp:
    return BodyLimitMiddleware(
        app,
        max_body_bytes=settings.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
    )
