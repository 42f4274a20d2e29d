"""The reference we improve on: the seed's BaseHTTPMiddleware request-id and access-log pattern."""

import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from bare import build
from fastapi import Request, Response
from starlette.middleware.base import BaseHTTPMiddleware

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(message)s")
access_logger = logging.getLogger("access")


class RequestIdMiddleware(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        access_logger.info(
            "%s %s %d %.2fms request_id=%s",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            request_id,
        )
        return response


app = build()
app.add_middleware(RequestIdMiddleware)
