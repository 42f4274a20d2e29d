from httpx import AsyncClient


async def test_openapi_describes_the_service(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    info = schema["info"]
    assert info["title"]
    assert info["version"]
    assert info["contact"]["email"]
    assert info["license"]["name"]
    assert "health" in {tag["name"] for tag in schema["tags"]}


async def test_openapi_documents_the_error_envelope(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    ready = schema["paths"]["/health/ready"]["get"]["responses"]
    assert {"200", "500", "503"} <= set(ready)
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert {"error", "detail", "request_id"} <= set(envelope["properties"])


async def test_docs_are_served_when_enabled(client: AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
