"""Liveness (the process answers) and readiness (every dependency answers)."""

import asyncio
import logging
from collections.abc import Mapping
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .errors import ErrorEnvelope, error_response
from .features import Feature, HealthCheck
from .resources import resources_of

# Below the probes' own timeout (timeoutSeconds: 3 in deploy/kubernetes): every check runs at
# once, and the answer goes out when all are done or this much time has passed, whichever is
# first. A check still running then counts as unavailable and is cancelled without waiting.
CHECK_TIMEOUT_SECONDS = 2.0
TAG = {"name": "health", "description": "Liveness and readiness probes for orchestrators."}

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"])


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["healthy"] = "healthy"
    checks: dict[str, str] = Field(examples=[{"database": "ok"}])


class Degraded(ErrorEnvelope):
    status: Literal["degraded"] = "degraded"
    checks: dict[str, str] = Field(examples=[{"database": "ok", "redis": "unavailable"}])


# Cancelled checks that have not finished yet: kept so that they finish (and their errors are
# read) after the answer has gone.
_abandoned: set[asyncio.Future[object]] = set()


def _forget(task: asyncio.Future[object]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()


async def _outcomes(checks: Mapping[str, HealthCheck]) -> dict[str, str]:
    """Each check's outcome, within CHECK_TIMEOUT_SECONDS in all, however a check hangs."""
    tasks = {name: asyncio.ensure_future(check()) for name, check in checks.items()}
    if tasks:
        await asyncio.wait(tasks.values(), timeout=CHECK_TIMEOUT_SECONDS)
    outcomes = {}
    for name, task in tasks.items():
        if not task.done():
            logger.warning("health check %s timed out after %ss", name, CHECK_TIMEOUT_SECONDS)
            task.cancel()
            _abandoned.add(task)
            task.add_done_callback(_forget)
            outcomes[name] = "unavailable"
        elif task.cancelled():
            logger.warning("health check %s was cancelled", name)
            outcomes[name] = "unavailable"
        elif (error := task.exception()) is not None:
            logger.warning("health check %s failed: %r", name, error)
            outcomes[name] = "unavailable"
        else:
            outcomes[name] = "ok"
    return outcomes


@router.get("/live", summary="The process is up")
async def live() -> Liveness:
    return Liveness()


@router.get(
    "/ready",
    summary="Every dependency answers",
    response_model=Readiness,
    responses={503: {"model": Degraded, "description": "A dependency is unavailable"}},
)
async def ready(request: Request) -> Readiness | JSONResponse:
    # The checks touch independent resources, so they run concurrently.
    results = await _outcomes(resources_of(request).health_checks)
    failing = sorted(name for name, outcome in results.items() if outcome != "ok")
    if failing:
        return error_response(
            503,
            "SERVICE_UNAVAILABLE",
            f"unavailable: {', '.join(failing)}",
            status="degraded",
            checks=results,
        )
    return Readiness(checks=results)


feature: Feature[object] = Feature(name="health", routers=[router], tags=[TAG])
