"""The protocol of the service's features: what a feature module may bring, and how to reach it.

A feature is one module with a module-level `feature = Feature(...)`: the resource it opens at
start-up (with its readiness check), its routers, its middleware and its error handlers. main.py
lists the features and composes them; nothing else in the service knows which ones are on.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar, cast

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp

Tag = dict[str, str]
"""An OpenAPI tag: `{"name": ..., "description": ...}`."""

T = TypeVar("T")
# A feature reads only its own settings; a feature of `DatabaseSettings` fits any `Settings` that
# includes them, hence contravariant.
S = TypeVar("S", contravariant=True)

# Each handler takes the one exception type it is registered for, hence `Any`.
ExceptionHandler = Callable[[Request, Any], Awaitable[Response]]
HealthCheck = Callable[[], Awaitable[object]]
"""Raises (or times out) when its dependency cannot serve; its return value is ignored."""


class ResourceKey(Generic[T]):
    """Names one open resource and its type: `DATABASE = ResourceKey[Database]("database")`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ResourceKey({self.name!r})"


class Resources:
    """What the lifespan opened, by key, and the readiness check of each dependency."""

    def __init__(self) -> None:
        self._values: dict[ResourceKey[Any], object] = {}
        self.checks: dict[str, HealthCheck] = {}

    def provide(self, key: ResourceKey[T], value: T) -> None:
        """Make `value` reachable by `key`; a later feature may replace what an earlier gave."""
        self._values[key] = value

    def add_check(self, name: str, check: HealthCheck) -> None:
        """`/health/ready` runs `check` and reports it under `name`."""
        self.checks[name] = check

    def __getitem__(self, key: ResourceKey[T]) -> T:
        try:
            return cast("T", self._values[key])
        except KeyError:
            raise LookupError(f"{key.name} is not open: is the app's lifespan running?") from None


def app_resources(app: Starlette) -> Resources:
    """What the app's lifespan opened (main.py puts it there)."""
    resources: Resources = app.state.resources
    return resources


def resources_of(connection: HTTPConnection) -> Resources:
    """The open resources of the app serving this request; typed dependencies start here."""
    return app_resources(connection.app)


class Layer(IntEnum):
    """Where a middleware sits, outermost first: a request passes them in this order."""

    TRACING = 10
    REQUEST_CONTEXT = 20
    CONCURRENCY_LIMIT = 25
    METRICS = 30
    CORS = 40
    RATE_LIMIT = 50
    BODY_LIMIT = 60


class ConfigurationError(Exception):
    """A setting the service cannot start with: `variable` names it, `problem` says why."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Middleware(Generic[S]):
    """A pure ASGI middleware, built from the settings, and its place in the stack."""

    layer: Layer
    build: Callable[[ASGIApp, S], ASGIApp]


@dataclass(frozen=True)
class Feature(Generic[S]):
    """What one module contributes; every part is optional."""

    name: str
    # Opens the feature's resource at start-up, `provide`s it, and closes it at shutdown.
    lifespan: Callable[[S, Resources], AbstractAsyncContextManager[None]] | None = None
    routers: Sequence[APIRouter] = ()
    middleware: Sequence[Middleware[S]] = ()
    exception_handlers: Mapping[type[Exception], ExceptionHandler] = field(default_factory=dict)
    tags: Sequence[Tag] = ()
    # Anything else done to the app as it is built (mounting static files, say).
    configure: Callable[[FastAPI, S], None] | None = None
    # Run once by `python -m <package>` before anything else: raises ConfigurationError when a
    # setting cannot work (a database that does not exist, refused credentials); a dependency
    # that is merely down is no configuration error, and the service starts without it.
    check_configuration: Callable[[S], Awaitable[None]] | None = None
    # Run once by `python -m <package>` with the number of workers, before the server starts
    # them: what the workers must not each do at the same moment (apply migrations, say).
    before_workers: Callable[[S, int], None] | None = None
