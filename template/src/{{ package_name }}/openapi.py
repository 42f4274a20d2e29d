"""OpenAPI metadata: what the service is, who owns it, and the errors its operations answer."""

from collections.abc import Callable
from email.utils import parseaddr
from importlib.metadata import PackageMetadata, metadata
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from . import DISTRIBUTION, __version__
from .errors import ErrorEnvelope, ValidationErrorEnvelope
from .features import Tag
from .settings import CoreSettings

Responses = dict[int | str, dict[str, Any]]
"""Documented responses of an operation, as FastAPI's `responses=` takes them."""

CONVENTIONS = """

Every response carries an `X-Request-ID` header (the caller's, if it is a sane token).
Every response outside 2xx carries the error envelope
`{"error": CODE, "detail": text, "request_id": id}`.
"""

RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
# What any operation may answer, documented once for all of them (a route documents only its
# own answers): the body and the parameters checked before the route runs, an unexpected
# failure, and a dependency that is down or a worker at its limit.
ERROR_RESPONSES: Responses = {
    400: {"model": ErrorEnvelope, "description": "The body could not be read (not UTF-8)"},
    413: {"model": ErrorEnvelope, "description": "The body exceeds the size limit"},
    422: {"model": ValidationErrorEnvelope, "description": "The request failed validation"},
    500: {"model": ErrorEnvelope, "description": "Unexpected error; quote the request id"},
    503: {
        "model": ErrorEnvelope,
        "description": "Unavailable now (a dependency is down, or the service is at capacity); "
        "retry after `Retry-After` seconds",
        "headers": {"Retry-After": RETRY_AFTER},
    },
}
# Every operation documents these already; kept for routes that spread it.
BODY_ERROR_RESPONSES: Responses = {status: ERROR_RESPONSES[status] for status in (400, 413)}


def error_response_doc(status_code: int, description: str) -> Responses:
    """One documented error answer: `responses={**error_response_doc(404, "No such order")}`."""
    return {status_code: {"model": ErrorEnvelope, "description": description}}


def envelope_doc(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error answer as the OpenAPI document states it (`document_operations` takes these)."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    doc: dict[str, Any] = {"description": description, "content": content}
    if headers:
        doc["headers"] = headers
    return doc


def document_operations(
    app: FastAPI,
    responses: dict[str, dict[str, Any]],
    applies: Callable[[str, dict[str, Any]], bool],
) -> None:
    """Add `responses` to each operation that `applies(path, operation)` to, in the OpenAPI
    document FastAPI builds: what a feature answers on routes that do not name it (a 429 of
    the rate limit, a 401 of a route that asks who calls)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if applies(path, operation):
                        documented = operation.setdefault("responses", {})
                        for status, doc in responses.items():
                            documented.setdefault(status, doc)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def operation_id(route: APIRoute) -> str:
    """`products-create_product`: the route's first tag and its function's name.

    Clients generated from the schema name their functions after it (`products_create_product`),
    so it is public, like the paths: it stays when a path or a method changes, and changes only
    with the function's name. (FastAPI's default adds the path and the method to the name.)
    """
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def _field(package: PackageMetadata, name: str) -> str:
    return next(iter(package.get_all(name) or []), "")


def openapi_options(settings: CoreSettings, tags: list[Tag]) -> dict[str, Any]:
    """Keyword arguments for `FastAPI(...)`, described from the package's own metadata.

    The docs pages are the `docs` feature's; here only the schema is switched on or off.
    """
    package = metadata(DISTRIBUTION)
    name, email = parseaddr(_field(package, "Author-email"))
    return {
        "title": settings.app_name,
        "version": __version__,
        "description": _field(package, "Summary") + CONVENTIONS,
        "contact": {"name": name, "email": email},
        "license_info": {"name": "Proprietary"},
        "openapi_tags": tags,
        "responses": ERROR_RESPONSES,
        "generate_unique_id_function": operation_id,
        "openapi_url": "/openapi.json" if settings.docs_enabled else None,
        "docs_url": None,
        "redoc_url": None,
    }
