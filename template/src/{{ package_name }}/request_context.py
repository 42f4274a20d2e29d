"""The request being served: its id, readable from anywhere while it is handled, and what else a
feature adds to each log line written meanwhile."""

import os
import random
import re
from collections.abc import Callable
from contextvars import ContextVar

from starlette.types import Scope

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept only if it is a short, printable token; anything else is replaced.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

request_id_var: ContextVar[str] = ContextVar("request_id", default="")

# A field, header or parameter whose name holds one of these may carry a credential: its value is
# never written out (error reports, a span's query string).
CREDENTIAL_WORDS = (
    "authorization",
    "cookie",
    "token",
    "password",
    "passwd",
    "secret",
    "key",
    "credential",
    "session",
)

AccessLog = Callable[[str, str, int, float], None]
"""Writes one line for a served request: method, path, status, duration in milliseconds."""

LogFields = Callable[[], dict[str, str]]
"""The fields a feature adds to the log line being written now; empty when it has none."""

# Filled as the app is built by the features that add fields (tracing: the trace and span ids);
# both logging flavours read it for every line, the access line included.
log_fields: dict[str, LogFields] = {}

# An id is no secret, only unique: 128 bits from a generator of the service's own, not the module's
# shared one that tests and libraries seed and read; reseeded in each worker after the fork, as
# the shared one is. (`secrets` would make a system call per request.)
_request_ids = random.Random()  # noqa: S311
if hasattr(os, "fork"):  # as `random` does for its own: where processes fork
    os.register_at_fork(after_in_child=_request_ids.seed)


def is_credential(name: object) -> bool:
    return isinstance(name, str) and any(word in name.lower() for word in CREDENTIAL_WORDS)


def current_request_id() -> str:
    return request_id_var.get()


def request_id_from(header: bytes | None) -> str:
    """The caller's id when it is a sane token, else a new one."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header.decode("ascii")
    return f"{_request_ids.getrandbits(128):032x}"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the request's header `name` (lowercase), or None."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value
    return None
