"""What one client can hold: the size and the time a request's head may take, and the cap on
connections, enforced by uvicorn's httptools protocol with a few additions.

httptools has no limit on a request head and builds a long header by repeated concatenation: a
100 MB header held the event loop for 27 s. uvicorn times out idle keep-alive connections only
after a response, so a client that connects and never finishes its head holds its connection
(and a slot under the cap) forever. Here a head larger than `max_header_bytes` is answered 431
as soon as it is, and a head not complete within `header_timeout_seconds` closes the connection.
Past the cap (uvicorn's `limit_concurrency`) the 503 carries the error envelope, and the health
checks are still served.
"""

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any, TypedDict

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from .config import get_settings
from .errors import error_code_for
from .request_context import REQUEST_ID_HEADER, request_id_from
from .settings import CoreSettings

logger = logging.getLogger(__name__)

# Past the connection cap these still reach the app: a probe must see the service's health,
# and restarting a busy service would not make it less busy.
CAP_EXEMPT_PREFIX = "/health/"
# How long a refused connection stays open after its answer, for the client to read it.
LINGER_SECONDS = 1.0


def error_body(status: int, detail: str, request_id: str) -> bytes:
    envelope = {"error": error_code_for(status), "detail": detail, "request_id": request_id}
    return json.dumps(envelope).encode()


def error_response(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response with the error envelope, which closes the connection."""
    request_id = request_id_from(None)
    body = error_body(status, detail, request_id)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def over_capacity(
    _scope: Scope, _receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """uvicorn's answer past the connection cap, in the envelope and with a Retry-After."""
    request_id = request_id_from(None)
    body = error_body(503, "The service is at its connection limit; retry shortly", request_id)
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"retry-after", b"1"),
                (REQUEST_ID_HEADER, request_id.encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One connection: uvicorn's httptools protocol, with a bounded request head."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        settings: CoreSettings | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = settings or get_settings()
        self.max_head_bytes = limits.max_header_bytes
        self.head_timeout = limits.header_timeout_seconds
        # Bytes received since the current head began; None while no head is being read.
        self.head_bytes: int | None = 0
        # When the current head began (the loop's clock); None while no head is being read.
        self.head_started: float | None = None
        # One timer per connection, not per request: when it fires it checks the head being
        # read, if any, and sets itself again for the rest of that head's time.
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_begins()  # a connection that sends nothing is timed out like a slow head

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is not None:
            if self.head_started is None:
                self._head_begins()
            # Counted per chunk: the parser sees at most one chunk past the limit.
            self.head_bytes += len(data)
        super().data_received(data)
        over = self.head_bytes is not None and self.head_bytes > self.max_head_bytes
        if over and not self.transport.is_closing():
            logger.warning("request head over %s bytes refused", self.max_head_bytes)
            self._refuse(431, f"The request's headers exceed {self.max_head_bytes} bytes")

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        self.head_started = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0  # the next request's head, timed from its first byte

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if app is service_unavailable:
            exempt = cycle.scope["path"].startswith(CAP_EXEMPT_PREFIX)
            app = self.app if exempt else over_capacity
        super()._start_asgi_task(cycle, app)

    def _head_begins(self) -> None:
        self.head_started = self.loop.time()
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.head_started is None:
            return  # closed, or between heads: the next head sets the timer again
        left = self.head_started + self.head_timeout - self.loop.time()
        if left > 0:  # a later head than the one the timer was set for
            self.head_timer = self.loop.call_later(left, self._head_timed_out)
            return
        if self.head_bytes:
            self._refuse(408, "The request's headers did not arrive in time")
        else:
            self.transport.close()  # a connection that never began a request: nothing to say

    def _refuse(self, status: int, detail: str) -> None:
        self.head_bytes = None
        self.head_started = None
        self._cancel_head_timer()
        # Nothing more is read; the answer goes out, then the end of the stream. The socket is
        # closed a moment later: closed with the client's bytes unread, it would be reset, and
        # the reset can discard the answer before the client reads it.
        self.transport.pause_reading()
        self.transport.write(error_response(status, detail))
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


class ConnectionOptions(TypedDict):
    """uvicorn's settings for what one client can hold, from the service's settings."""

    http: type[asyncio.Protocol]
    limit_concurrency: int
    timeout_keep_alive: int


def connection_options(settings: CoreSettings) -> ConnectionOptions:
    return ConnectionOptions(
        http=LimitedHttpToolsProtocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
    )
