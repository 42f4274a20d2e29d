"""The protocol of the service's features: the routes, error handlers and start-up checks a
module brings.

A feature is one module with a module-level `feature = Feature(...)`; main.py lists them. What
the service opens at start-up (resources.py) and its middleware are listed in main.py itself.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from .resources import Resources

Tag = dict[str, str]
"""An OpenAPI tag: `{"name": ..., "description": ...}`."""

# A feature reads only its own settings; a feature of `DatabaseSettings` fits any `Settings` that
# includes them, hence contravariant.
S = TypeVar("S", contravariant=True)

# Each handler takes the one exception type it is registered for, hence `Any`.
ExceptionHandler = Callable[[Request, Any], Awaitable[Response]]
HealthCheck = Callable[[], Awaitable[object]]
"""Raises (or times out) when its dependency cannot serve; its return value is ignored."""


class ConfigurationError(Exception):
    """A setting the service cannot start with: `variable` names it, `problem` says why."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Feature(Generic[S]):
    """What one module contributes; every part is optional."""

    name: str
    routers: Sequence[APIRouter] = ()
    exception_handlers: Mapping[type[Exception], ExceptionHandler] = field(default_factory=dict)
    tags: Sequence[Tag] = ()
    # Anything else done to the app as it is built (mounting static files, say).
    configure: Callable[[FastAPI, S], None] | None = None
    # Run once by `python -m <package>` before anything else: raises ConfigurationError when a
    # setting cannot work (a database that does not exist, refused credentials); a dependency
    # that is merely down is no configuration error, and the service starts without it.
    check_configuration: Callable[[S], Awaitable[None]] | None = None
    # Work a domain does at start-up with what main.py opened (registering a kind of job,
    # say), undone at shutdown.
    lifespan: Callable[["Resources"], AbstractAsyncContextManager[None]] | None = None
    # Run once by `python -m <package>` with the number of workers, before the server starts
    # them: what the workers must not each do at the same moment (apply migrations, say).
    before_workers: Callable[[S, int], None] | None = None
