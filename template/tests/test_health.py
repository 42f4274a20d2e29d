from fastapi import FastAPI
from httpx import AsyncClient


async def test_live_answers_alive(client: AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_ready_answers_healthy_when_every_check_passes(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert all(outcome == "ok" for outcome in response.json()["checks"].values())


async def test_ready_answers_503_naming_the_failing_dependency(
    app: FastAPI, client: AsyncClient
) -> None:
    async def broken() -> None:
        raise ConnectionError("refused")

    app.state.health_checks["queue"] = broken
    response = await client.get("/health/ready", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "SERVICE_UNAVAILABLE"
    assert body["status"] == "degraded"
    assert body["checks"]["queue"] == "unavailable"
    assert body["request_id"] == "abc-123"
    assert "refused" not in response.text
