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


async def test_every_operation_has_a_unique_id_of_its_tag_and_function(
    client: AsyncClient,
) -> None:
    """Generated clients name their functions after these ids: readable, and public."""
    schema = (await client.get("/openapi.json")).json()
    operations = [
        operation for methods in schema["paths"].values() for operation in methods.values()
    ]
    ids = [operation["operationId"] for operation in operations]
    assert len(set(ids)) == len(ids)
    assert schema["paths"]["/health/live"]["get"]["operationId"] == "health-live"
    for operation in operations:
        assert operation["operationId"].startswith(f"{operation['tags'][0]}-")
