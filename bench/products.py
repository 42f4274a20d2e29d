"""Measurements of the example `products` API (DESIGN section 3), guarded by its presence.

The contract they rely on: `POST /api/v1/products` (201, the product with its `id`),
`GET /api/v1/products/{id}` (`X-Cache: HIT|MISS` when a cache is on),
`GET /api/v1/products/export` (text/csv streamed from the database), `APP_DATABASE_URL`
(its SQLite form documented in `.env.example`) and `APP_REDIS_URL`.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
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
SEEDED_SKU = "printf('BX-%04d-%03d', n / 1000, n % 1000)"


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


def _products_table(db: sqlite3.Connection) -> tuple[str, list[tuple[str, str, bool]]]:
    """The table holding products (the one with a `sku` column): its name and columns."""
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        columns = [
            (str(name), str(kind).upper(), bool(pk))
            for _, name, kind, _, _, pk in db.execute(f'PRAGMA table_info("{table}")')
        ]
        if any(name == "sku" for name, _, _ in columns):
            return table, columns
    raise RuntimeError(f"no table with a sku column among {tables}")


def seed_rows(database: Path, total: int) -> None:
    """Copies the product written by `create_product` until the table holds `total` rows.

    Bulk SQL straight into the SQLite file (the server is stopped): a million rows in seconds.
    Copies keep every column of the template row but a fresh key, name and sku.
    """
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("PRAGMA synchronous = OFF")
        table, columns = _products_table(db)
        (count,) = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        if count >= total:
            return
        names, values = [], []
        for name, kind, primary_key in columns:
            if primary_key and "INT" in kind:
                continue  # SQLite assigns the next rowid
            names.append(f'"{name}"')
            if primary_key:
                values.append("lower(hex(randomblob(16)))")
            elif name == "sku":
                values.append(SEEDED_SKU)
            elif name == "name":
                values.append("t.name || ' ' || n")
            else:
                values.append(f't."{name}"')
        db.execute(
            f'INSERT INTO "{table}" ({", ".join(names)}) '
            "WITH RECURSIVE seq(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
            f'SELECT {", ".join(values)} FROM seq, (SELECT * FROM "{table}" WHERE sku = ?) AS t',
            (count, total - 1, PRODUCT["sku"]),
        )


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
