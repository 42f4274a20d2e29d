"""The baselines: bare FastAPI with the generated service's liveness route and nothing else.

`app` declares the route on the application; `router_app` declares it in an `APIRouter`, included
with the same prefix and tag as the generated service's `health` router. FastAPI (0.16x) serves
routes of an included router through a lazy wrapper that costs time per request, so this pair
measures FastAPI's own share, and `router_app` is the baseline with the very same route.
"""

from typing import Literal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


def build() -> FastAPI:
    app = FastAPI()

    @app.get("/health/live")
    async def live() -> Liveness:
        return Liveness()

    return app


def build_with_router() -> FastAPI:
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live")
    async def live() -> Liveness:
        return Liveness()

    app = FastAPI()
    app.include_router(router)
    return app


app = build()
router_app = build_with_router()
