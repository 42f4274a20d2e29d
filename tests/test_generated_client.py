"""A client generated from the full render's OpenAPI document by a maintained generator
(openapi-python-client, from PyPI) drives the running service.

Its functions are named after the operation ids, so those read as a team would name them
(`products_create_product`, not `create_product_api_v1_products_post`), and the documented
answers come back as the documented models: created, read, not found, a conflict, a page, a
write refused without a valid token and one allowed with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess, Variant, run
from variants import FULL

from harness import throwaway_database

GENERATOR = "openapi-python-client>=0.29"

DRIVE = """
import json, sys

from {client}.api.products import (
    products_create_product,
    products_delete_product,
    products_list_products,
    products_read_product,
)
from {client}.client import AuthenticatedClient, Client
from {client}.models import ErrorEnvelope, ProductCreate, ProductOut, ProductPage

url, token = sys.argv[1:]
public = Client(base_url=url, raise_on_unexpected_status=True)
writer = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True)
stranger = AuthenticatedClient(base_url=url, token="not-a-token", raise_on_unexpected_status=True)
lamp = ProductCreate(name="Lamp", price="19.90", category_id=1, sku="LA-0001-001")

refused = products_create_product.sync_detailed(client=stranger, body=lamp)
created = products_create_product.sync_detailed(client=writer, body=lamp)
duplicate = products_create_product.sync_detailed(client=writer, body=lamp)
read = products_read_product.sync_detailed(created.parsed.id, client=public)
missing = products_read_product.sync_detailed(999_999, client=public)
page = products_list_products.sync_detailed(client=public, size=10)
deleted = products_delete_product.sync_detailed(created.parsed.id, client=writer)
gone = products_read_product.sync_detailed(created.parsed.id, client=public)

def seen(response, model):
    assert isinstance(response.parsed, model), (response.status_code, response.content)
    body = response.parsed.to_dict()
    return {{"status": int(response.status_code), "error": body.get("error"), "body": body}}

print(json.dumps({{
    "refused": seen(refused, ErrorEnvelope),
    "created": seen(created, ProductOut),
    "duplicate": seen(duplicate, ErrorEnvelope),
    "read": seen(read, ProductOut),
    "missing": seen(missing, ErrorEnvelope),
    "page": seen(page, ProductPage),
    "deleted": {{"status": int(deleted.status_code)}},
    "gone": seen(gone, ErrorEnvelope),
}}))
"""


@pytest.mark.parametrize("variant", [FULL.param()])
def test_a_client_generated_from_the_openapi_drives_the_service(
    projects: Projects, variant: Variant, tmp_path: Path
) -> None:
    postgres, redis = os.environ.get("TEST_POSTGRES_URL"), os.environ.get("TEST_REDIS_URL")
    if not postgres or not redis:
        pytest.skip("TEST_POSTGRES_URL and TEST_REDIS_URL are needed: the full render uses both")
    project = projects.installed(FULL)
    python = project / ".venv" / "bin" / "python"
    server = postgres.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
    with throwaway_database(project, postgres, prefix="client") as database:
        env = {"APP_DATABASE_URL": f"{server}/{database}", "APP_REDIS_URL": redis}
        with ServiceProcess(project, FULL.package, tmp_path / "service.log", **env) as service:
            schema = httpx.get(f"{service.url}/openapi.json").json()
            (tmp_path / "openapi.json").write_text(json.dumps(schema))
            generate = ["uvx", "--quiet", "--from", GENERATOR, "openapi-python-client"]
            generated = run(
                [*generate, "generate", "--path", "openapi.json", "--output-path", "client"],
                tmp_path,
            )
            version = run([*generate, "--version"], tmp_path).stdout.strip()
            run(["uv", "venv", "--quiet", "client-env"], tmp_path)
            client_python = tmp_path / "client-env" / "bin" / "python"
            run(
                ["uv", "pip", "install", "--quiet", "--python", client_python, "./client"], tmp_path
            )
            token = run([python, "-m", f"{FULL.package}.security", "--sub", "client"], project)
            package = next(p.name for p in (tmp_path / "client").glob("*_client") if p.is_dir())
            script = DRIVE.format(client=package)
            drive = [client_python, "-c", script, service.url, token.stdout.strip()]
            seen = json.loads(run(drive, tmp_path).stdout)

    api = tmp_path / "client" / package / "api"
    modules = sorted(p.stem for p in api.rglob("*.py") if p.stem != "__init__")
    assert "products_create_product" in modules, modules
    assert not [module for module in modules if "api_v1" in module], modules
    assert seen["refused"]["status"] == 401
    assert seen["created"]["status"] == 201
    assert seen["created"]["body"]["sku"] == "LA-0001-001"
    assert (seen["duplicate"]["status"], seen["duplicate"]["error"]) == (409, "CONFLICT")
    assert seen["read"]["body"] == seen["created"]["body"]
    assert (seen["missing"]["status"], seen["missing"]["error"]) == (404, "NOT_FOUND")
    assert seen["page"]["status"] == 200
    assert seen["created"]["body"] in seen["page"]["body"]["items"]
    assert seen["deleted"]["status"] == 204
    assert (seen["gone"]["status"], seen["gone"]["error"]) == (404, "NOT_FOUND")
    # The generator names what it left out (a CSV body is not a type it knows).
    said = (generated.stdout + generated.stderr).splitlines()
    skipped = [line.strip() for line in said if "will not be generated" in line]
    print(f"\n{version}: {len(modules)} operations generated; skipped: {skipped or 'none'}")
