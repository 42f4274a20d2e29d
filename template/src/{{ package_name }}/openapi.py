"""OpenAPI metadata: what the service is, who owns it, and the errors its operations answer."""

from email.utils import parseaddr
from importlib.metadata import PackageMetadata, metadata
from typing import Any

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

ERROR_RESPONSES: Responses = {
    422: {"model": ValidationErrorEnvelope, "description": "The request failed validation"},
    500: {"model": ErrorEnvelope, "description": "Unexpected error; quote the request id"},
}

# What a route that reads a request body may answer before the route itself runs.
BODY_ERROR_RESPONSES: Responses = {
    400: {"model": ErrorEnvelope, "description": "The body could not be read (not UTF-8)"},
    413: {"model": ErrorEnvelope, "description": "The body exceeds the size limit"},
}


def error_response_doc(status_code: int, description: str) -> Responses:
    """One documented error answer: `responses={**error_response_doc(404, "No such order")}`."""
    return {status_code: {"model": ErrorEnvelope, "description": description}}


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
        "openapi_url": "/openapi.json" if settings.docs_enabled else None,
        "docs_url": None,
        "redoc_url": None,
    }
