"""Liveness (the process answers) and readiness (every dependency answers)."""

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .errors import ErrorEnvelope, error_response
from .features import Feature, HealthCheck, resources_of

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


async def _outcome(name: str, check: HealthCheck) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.warning("health check %s failed: %r", name, exc)
        return "unavailable"
    return "ok"


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
    checks = resources_of(request).checks
    # The checks touch independent resources, so they run concurrently.
    outcomes = await asyncio.gather(*(_outcome(name, check) for name, check in checks.items()))
    results = dict(zip(checks, outcomes, strict=True))
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
