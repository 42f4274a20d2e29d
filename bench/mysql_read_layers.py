"""MySQL read by id, the database layer alone, CPU per read side by side: asyncmy's own pool
against SQLAlchemy Core on the rendered service's engine, and variations of each.

    PACKAGE=xprof GENERATED_URL=mysql+asyncmy://root@127.0.0.1:3306/a \
    .venv/bin/python <template>/bench/mysql_read_layers.py 1000 8
"""

import asyncio
import importlib
import os
import statistics
import sys
import time

import asyncmy
from sqlalchemy import make_url

PACKAGE = os.environ["PACKAGE"]
open_database = importlib.import_module(f"{PACKAGE}.db").open_database
BY_ID = importlib.import_module(f"{PACKAGE}.products.repository").BY_ID
_U = make_url(os.environ["GENERATED_URL"])
N = int(sys.argv[1])
ROUNDS = int(sys.argv[2])
URL = os.environ["GENERATED_URL"]


async def raw_pool(**options):
    """asyncmy's own pool on the service's database, as bench/apps/raw_db.py opens one."""
    return await asyncmy.create_pool(
        host=_U.host,
        port=_U.port or 3306,
        user=_U.username,
        password=_U.password or "",
        database=_U.database,
        autocommit=True,
        minsize=1,
        maxsize=10,
        **options,
    )


async def main1(pool, sql):
    xdb = importlib.import_module(f"{PACKAGE}.db")
    original = xdb.mysql_connect_args

    def no_read_timeout(wait):
        args = original(wait)
        del args["read_timeout"]
        return args

    xdb.mysql_connect_args = no_read_timeout
    async with open_database(URL, pool_size=10) as database_nrt:
        xdb.mysql_connect_args = original
        return await main2(pool, sql, database_nrt)


async def main2(pool, sql, database_nrt):
    pool_rt = await raw_pool(read_timeout=5)
    async with open_database(URL, pool_size=10) as database:

        async def sa_core():
            async with database.connect() as c:
                return (await c.execute(BY_ID, {"product_id": 1})).first()

        async def sa_driver_sql():
            async with database.connect() as c:
                return (await c.exec_driver_sql(sql, (1,))).first()

        held = {}  # the one connection the no-checkout read uses, opened below

        async def sa_shared_conn():
            return (await held["connection"].execute(BY_ID, {"product_id": 1})).first()

        async def raw():
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(sql, (1,))
                return await cur.fetchone()

        async def sa_no_read_timeout():
            async with database_nrt.connect() as c:
                return (await c.execute(BY_ID, {"product_id": 1})).first()

        async def raw_read_timeout():
            async with pool_rt.acquire() as conn, conn.cursor() as cur:
                await cur.execute(sql, (1,))
                return await cur.fetchone()

        async def sa_explicit_close():
            connection = await database.connect().start()
            try:
                return (await connection.execute(BY_ID, {"product_id": 1})).first()
            finally:
                await connection.close()

        async def sa_sync_first():
            async with database.connect() as c:
                return (await c.execute(BY_ID, {"product_id": 1})).first()

        async def sa_pool_driver_cursor():
            async with database.connect() as c:
                raw_conn = await c.get_raw_connection()
                async with raw_conn.driver_connection.cursor() as cur:
                    await cur.execute(sql, (1,))
                    return await cur.fetchone()

        shared = held["connection"] = await database.connect().start()
        fns = {
            "raw_asyncmy": raw,
            "sa_core": sa_core,
            "sa_driver_sql": sa_driver_sql,
            "sa_no_checkout": sa_shared_conn,
            "sa_no_read_tmo": sa_no_read_timeout,
            "raw_read_tmo": raw_read_timeout,
            "sa_explicit_close": sa_explicit_close,
            "sa_pool_drv_cur": sa_pool_driver_cursor,
        }
        for f in fns.values():
            assert await f() is not None
        rates = {k: [] for k in fns}
        for r in range(ROUNDS):
            for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                t = time.process_time()
                for _ in range(N):
                    await fns[k]()
                rates[k].append((time.process_time() - t) / N * 1e6)
        await shared.close()
    return rates


async def main():
    pool = await raw_pool()
    sql = (
        "SELECT id, name, description, price, category_id, sku, created_at, updated_at "
        "FROM products WHERE id = %s"
    )
    rates = await main1(pool, sql)
    base = statistics.median(rates["raw_asyncmy"])
    for k, v in rates.items():
        m = statistics.median(v)
        print(f"{k:16s} CPU {m:6.1f} us/read  raw/this {base / m:.3f}")


asyncio.run(main())
