"""Measurements of the example `products` API (DESIGN section 3), guarded by its presence.

The contract they rely on: `POST /api/v1/products` (201, the product with its `id`),
`GET /api/v1/products/{id}` (`X-Cache: HIT|MISS` when a cache is on),
`GET /api/v1/products/export` (text/csv streamed from the database), `APP_DATABASE_URL`
(its SQLite form documented in `.env.example`) and `APP_REDIS_URL`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .server import Server

COLLECTION = "/api/v1/products"
EXPORT = "/api/v1/products/export"
NOT_AVAILABLE = "not available in this template version"
# The seed's ProductCreate: sku matches ^[A-Z]{2}-\d{4}-\d{3}$.
PRODUCT = {
    "name": "Bench widget",
    "description": "A product written by the benchmark",
    "price": "19.99",
    "category_id": 1,
    "sku": "BE-0000-001",
}


def routes(server: Server) -> set[str]:
    """The paths that the running service documents in its OpenAPI schema."""
    response = httpx.get(f"{server.url}/openapi.json", timeout=10)
    if response.status_code != 200:
        return set()
    return set(response.json().get("paths", {}))


def has_item_route(paths: set[str]) -> bool:
    return COLLECTION in paths and any(p.startswith(f"{COLLECTION}/{{") for p in paths)


def has_export_route(paths: set[str]) -> bool:
    return EXPORT in paths


def sqlite_url(documented: str | None, database: Path) -> str:
    """The documented SQLite URL's scheme (its driver) pointed at `database`."""
    scheme = "sqlite+aiosqlite"
    if documented and documented.startswith("sqlite") and ":///" in documented:
        scheme = documented.split(":///", 1)[0]
    return f"{scheme}:///{database}"


def create_product(server: Server) -> str:
    """Writes one product through the API; returns its id."""
    response = httpx.post(f"{server.url}{COLLECTION}", json=PRODUCT, timeout=10)
    if response.status_code != 201:
        raise RuntimeError(f"POST {COLLECTION} answered {response.status_code}: {response.text}")
    return str(response.json()["id"])


def warm_cache(server: Server, product_id: str) -> str:
    """Reads the product twice; returns the second read's X-Cache header ("" without a cache)."""
    url = f"{server.url}{COLLECTION}/{product_id}"
    for _ in range(2):
        response = httpx.get(url, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text}")
    return response.headers.get("x-cache", "")


@dataclass(frozen=True)
class ExportMemory:
    rows: int
    growth_bytes: int
    seconds: float


def export_memory(server: Server, expected_rows: int) -> ExportMemory:
    """Streams the whole CSV export; the server's peak RSS growth over its RSS just before."""
    baseline = server.reset_peak_memory()
    lines = 0
    started = time.perf_counter()
    with httpx.stream("GET", f"{server.url}{EXPORT}", timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET {EXPORT} answered {response.status_code}")
        for chunk in response.iter_bytes():
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    growth = server.peak_memory() - baseline
    if lines != expected_rows + 1:
        raise RuntimeError(f"export had {lines} lines for {expected_rows} rows and a header")
    return ExportMemory(expected_rows, growth, seconds)
