"""The database baselines: FastAPI with the products routes written by hand on the driver.

What a careful engineer would write without the template: a pool of the driver's own (asyncpg,
asyncmy, aiomysql) or one shared connection (aiosqlite), one query per route, the JSON built by
hand. The routes answer the same bytes as the generated service's (the benchmark checks), on the
table its migrations create (prices in cents, timestamps in UTC). `BENCH_DATABASE_URL` names the
database: `postgresql://...`, `mysql+asyncmy://...`, `mysql+aiomysql://...` or `sqlite:///path`.

Run with a rendered project's interpreter (it has FastAPI and both drivers' dependencies):
`python serve.py raw_db:app`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Response
from pydantic import BaseModel

COLUMNS = "id, name, description, price, category_id, sku, created_at, updated_at"


class ProductIn(BaseModel):
    name: str
    description: str | None = None
    price: Decimal
    category_id: int
    sku: str


def _timestamp(value: datetime | str) -> str:
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS.ffffff", in UTC
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:  # MySQL: a DATETIME, in UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def product(row: Sequence[Any]) -> dict[str, Any]:
    """A row in the generated service's field order, its price from cents."""
    id_, name, description, price, category_id, sku, created_at, updated_at = row
    return {
        "name": name,
        "description": description,
        "price": str(Decimal(price).scaleb(-2)),
        "category_id": category_id,
        "sku": sku,
        "id": id_,
        "created_at": _timestamp(created_at),
        "updated_at": _timestamp(updated_at),
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Store:
    """The three queries the benchmark calls, on one driver."""

    fetch_one: Callable[[str, Sequence[Any]], Awaitable[Sequence[Any] | None]]
    fetch_all: Callable[[str, Sequence[Any]], Awaitable[list[Sequence[Any]]]]
    write_one: Callable[[str, Sequence[Any]], Awaitable[Sequence[Any] | None]]
    placeholders: Callable[[int], list[str]]


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    store = Store()
    if url.startswith("postgresql"):
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=2, max_size=10)

        async def fetch_one(query: str, args: Sequence[Any]) -> Sequence[Any] | None:
            return await pool.fetchrow(query, *args)

        async def fetch_all(query: str, args: Sequence[Any]) -> list[Sequence[Any]]:
            return list(await pool.fetch(query, *args))

        store.fetch_one = fetch_one
        store.fetch_all = fetch_all
        store.write_one = fetch_one  # autocommit: one statement, one round trip
        store.placeholders = lambda count: [f"${index}" for index in range(1, count + 1)]
        try:
            yield store
        finally:
            await pool.close()
        return

    if url.startswith("mysql"):
        async with open_mysql_store(url) as mysql_store:
            yield mysql_store
        return

    import aiosqlite

    connection = await aiosqlite.connect(url.split(":///", 1)[1])

    async def sqlite_fetch_one(query: str, args: Sequence[Any]) -> Sequence[Any] | None:
        async with connection.execute(query, args) as cursor:
            return await cursor.fetchone()

    async def sqlite_fetch_all(query: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        async with connection.execute(query, args) as cursor:
            return list(await cursor.fetchall())

    async def sqlite_write_one(query: str, args: Sequence[Any]) -> Sequence[Any] | None:
        row = await sqlite_fetch_one(query, args)
        await connection.commit()
        return row

    store.fetch_one = sqlite_fetch_one
    store.fetch_all = sqlite_fetch_all
    store.write_one = sqlite_write_one
    store.placeholders = lambda count: ["?"] * count
    try:
        yield store
    finally:
        await connection.close()


@asynccontextmanager
async def open_mysql_store(url: str) -> AsyncIterator[Store]:
    """A pool of asyncmy or aiomysql (the URL's driver), autocommit, the session in UTC."""
    server = urlsplit(url)
    options: dict[str, Any] = {
        "host": server.hostname,
        "port": server.port or 3306,
        "user": server.username,
        "password": server.password or "",
        "minsize": 2,
        "maxsize": 10,
        "autocommit": True,
        "charset": "utf8mb4",
        "init_command": "SET time_zone = '+00:00'",
    }
    if url.startswith("mysql+aiomysql"):
        import aiomysql

        pool = await aiomysql.create_pool(db=server.path.lstrip("/"), **options)
    else:
        import asyncmy

        pool = await asyncmy.create_pool(database=server.path.lstrip("/"), **options)

    async def fetch_one(query: str, args: Sequence[Any]) -> Sequence[Any] | None:
        async with pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(query, args)
            row: Sequence[Any] | None = await cursor.fetchone()
            return row

    async def fetch_all(query: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        async with pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(query, args)
            return list(await cursor.fetchall())

    async def write_one(query: str, args: Sequence[Any]) -> Sequence[Any] | None:
        # MySQL returns no row from an INSERT: the new id, then the row read back.
        insert, _, columns = query.partition(" RETURNING ")
        async with pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(insert, args)
            await cursor.execute(
                f"SELECT {columns} FROM products WHERE id = %s", (cursor.lastrowid,)
            )
            row: Sequence[Any] | None = await cursor.fetchone()
            return row

    store = Store()
    store.fetch_one = fetch_one
    store.fetch_all = fetch_all
    store.write_one = write_one
    store.placeholders = lambda count: ["%s"] * count
    try:
        yield store
    finally:
        pool.close()
        await pool.wait_closed()


def stored_time(url: str, now: datetime) -> datetime | str:
    """`now` as each driver takes it: aware (asyncpg), naive UTC (MySQL), text (SQLite)."""
    if url.startswith("postgresql"):
        return now
    if url.startswith("mysql"):
        return now.replace(tzinfo=None)
    return now.replace(tzinfo=None).isoformat(" ")


def build(url: str) -> FastAPI:
    state: dict[str, Store] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with open_store(url) as store:
            state["store"] = store
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/api/v1/products/{product_id:int}")
    async def read(product_id: int) -> Response:
        store = state["store"]
        (one,) = store.placeholders(1)
        row = await store.fetch_one(
            f"SELECT {COLUMNS} FROM products WHERE id = {one}", [product_id]
        )
        if row is None:
            return Response(dumps({"error": "NOT_FOUND"}), 404, media_type="application/json")
        return Response(dumps(product(row)), media_type="application/json")

    @app.get("/api/v1/products")
    async def page(page: int = Query(1, ge=1), size: int = Query(20, ge=1, le=100)) -> Response:
        store = state["store"]
        limit, offset = store.placeholders(2)
        total = await store.fetch_one("SELECT count(*) FROM products", [])
        rows = await store.fetch_all(
            f"SELECT {COLUMNS} FROM products ORDER BY id LIMIT {limit} OFFSET {offset}",
            [size, (page - 1) * size],
        )
        body = {
            "items": [product(row) for row in rows],
            "total": total[0] if total else 0,
            "page": page,
            "size": size,
        }
        return Response(dumps(body), media_type="application/json")

    @app.post("/api/v1/products", status_code=201)
    async def create(payload: ProductIn) -> Response:
        store = state["store"]
        now = datetime.now(UTC)
        marks = ", ".join(store.placeholders(7))
        values = [
            payload.name,
            payload.description,
            int(payload.price * 100),
            payload.category_id,
            payload.sku,
            stored_time(url, now),
            stored_time(url, now),
        ]
        row = await store.write_one(
            "INSERT INTO products (name, description, price, category_id, sku, created_at, "
            f"updated_at) VALUES ({marks}) RETURNING {COLUMNS}",
            values,
        )
        return Response(dumps(product(row or ())), 201, media_type="application/json")

    return app


app = build(os.environ.get("BENCH_DATABASE_URL", "sqlite:///bench.sqlite3"))
