"""The error hierarchy, and the one envelope that every response outside 2xx carries."""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .features import Feature
from .request_context import REQUEST_ID_HEADER, current_request_id

logger = logging.getLogger(__name__)

# Stable codes for statuses that Starlette raises itself (unknown route, wrong method, ...).
_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}


def error_code_for(status_code: int) -> str:
    return _CODES.get(status_code) or HTTPStatus(status_code).name


class ErrorEnvelope(BaseModel):
    error: str = Field(description="Stable machine-readable code", examples=["NOT_FOUND"])
    detail: str = Field(description="What went wrong, for people", examples=["Not Found"])
    request_id: str = Field(description="The request's X-Request-ID", examples=["abc-123"])


class FieldError(BaseModel):
    field: str = Field(examples=["body.price"])
    message: str = Field(examples=["Input should be greater than 0"])
    type: str = Field(examples=["greater_than"])


class ValidationErrorEnvelope(ErrorEnvelope):
    errors: list[FieldError]


class AppError(Exception):
    """Base of the errors the service raises on purpose; each maps to a status and a code."""

    status_code: ClassVar[int] = 500
    error_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class NotFoundError(AppError):
    status_code = 404
    error_code = "NOT_FOUND"

    def __init__(self, resource: str, identifier: object) -> None:
        super().__init__(f"{resource} '{identifier}' not found")


class UnauthorizedError(AppError):
    """The request carries no valid credentials; the challenge header tells the caller which."""

    status_code = 401
    error_code = "UNAUTHORIZED"

    def __init__(self, detail: str = "Not authenticated", *, scheme: str = "Bearer") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": scheme})


class ConflictError(AppError):
    status_code = 409
    error_code = "CONFLICT"


class BadGatewayError(AppError):
    """A remote service this one calls failed: it timed out, was unreachable or answered 5xx."""

    status_code = 502
    error_code = "BAD_GATEWAY"


class ServiceUnavailableError(AppError):
    """A dependency (database, cache, remote API) cannot serve the request right now."""

    status_code = 503
    error_code = "SERVICE_UNAVAILABLE"


def error_response(
    status_code: int,
    error: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The envelope: every answer outside 2xx, from a handler or a middleware, is built here."""
    body = {"error": error, "detail": detail, "request_id": current_request_id(), **extra}
    return JSONResponse(body, status_code=status_code, headers=headers)


def app_error_response(exc: AppError) -> JSONResponse:
    return error_response(exc.status_code, exc.error_code, exc.detail, headers=exc.headers)


async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
    return app_error_response(exc)


def allowed_methods(request: Request) -> str:
    """Every method some route answers at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path
    # Included routers nest their routes; this walks them as the OpenAPI generator does.
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return error_response(
        exc.status_code, error_code_for(exc.status_code), str(exc.detail), headers=headers
    )


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    return error_response(422, "VALIDATION_ERROR", "Request validation failed", errors=errors)


class UnhandledErrorMiddleware:
    """Pure ASGI, outermost: an error nothing else handled is logged once, with the request id,
    and answered with the 500 envelope.

    Every other middleware sees the error on its way out (tracing records it), and it ends here:
    Starlette's own last handler re-raises it, and the server would log its traceback again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_and_note_start(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_start)
        except Exception:
            logger.exception("unhandled error")
            if response_started:
                # Too late for an answer: the server closes the connection on the unfinished one.
                return
            await unhandled_error_response()(scope, receive, send)


def unhandled_error_response() -> JSONResponse:
    # Answered outside the request-context middleware, so the request id header is added here.
    request_id = current_request_id()
    # The connection is closed after it: the client does not send its next request on a
    # connection whose state nobody knows.
    return error_response(
        500,
        "INTERNAL_ERROR",
        "Internal server error",
        headers={REQUEST_ID_HEADER.decode(): request_id, "Connection": "close"},
    )


def unhandled_errors(app: ASGIApp, _settings: object) -> ASGIApp:
    return UnhandledErrorMiddleware(app)


feature: Feature[object] = Feature(
    name="errors",
    exception_handlers={
        AppError: _app_error,
        StarletteHTTPException: _http_error,
        RequestValidationError: _validation_error,
    },
)
