"""Measurements of the example `products` API (DESIGN section 3), guarded by its presence.

The contract they rely on: `POST /api/v1/products` (201, the product with its `id`),
`GET /api/v1/products/{id}` (`X-Cache: HIT|MISS` when a cache is on),
`GET /api/v1/products/export` (text/csv streamed from the database), `APP_DATABASE_URL`
(its SQLite form documented in `.env.example`) and `APP_REDIS_URL`.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import harness
from harness import clean_env

from .project import Project
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


def migrate(project: Project, database_url: str) -> None:
    """The render's own migrations, applied to `database_url`."""
    subprocess.run(
        [project.path / ".venv" / "bin" / "alembic", "upgrade", "head"],
        cwd=project.path,
        env=clean_env(APP_DATABASE_URL=database_url),
        check=True,
        capture_output=True,
        timeout=120,
    )


def asyncpg_url(url: str) -> str:
    """A `postgresql://` URL as SQLAlchemy's asyncpg driver names it."""
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@contextmanager
def throwaway_database(
    project: Project, server: str, name: str, scheme: str = "postgresql"
) -> Iterator[str]:
    """A new database on the PostgreSQL or MySQL `server`, dropped afterwards; yields its URL
    under `scheme`."""
    with harness.throwaway_database(project.path, server, f"bench_{name}") as database:
        yield harness.database_url(server, database, scheme=scheme)


TIMESTAMP = re.compile(rb'"(created|updated)_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"')


def same_answer(generated: Server, baseline: Server, path: str) -> str:
    """Checks that both servers answer `path` with the same bytes but for the timestamps' values
    (each database was seeded at its own moment); returns `path`."""
    answers = [httpx.get(f"{server.url}{path}", timeout=10) for server in (generated, baseline)]
    for answer in answers:
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:200]}")
    shapes = [TIMESTAMP.sub(rb'"\1_at":"T"', answer.content) for answer in answers]
    if shapes[0] != shapes[1]:
        raise RuntimeError(
            f"GET {path}: the baseline's answer differs from the generated service's:\n"
            f"{answers[0].content[:300]!r}\n{answers[1].content[:300]!r}"
        )
    return path
