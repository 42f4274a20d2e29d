"""The baseline: bare FastAPI with the generated service's liveness route and nothing else."""

from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


def build() -> FastAPI:
    app = FastAPI()

    @app.get("/health/live")
    async def live() -> Liveness:
        return Liveness()

    return app


app = build()
