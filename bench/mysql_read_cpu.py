"""MySQL read by id, CPU per request, side by side in one process: each contender's ASGI app is
called directly (no HTTP client, no server), rounds alternated, and the process's CPU time per
request is the figure (the database's own work is in its own process and not counted).

Contenders: `raw` (bench/apps/raw_db.py on asyncmy), `base` (the rendered service as it is), and
measurement-only variations of the service's engine: `no_read_timeout` (asyncmy without its
per-read bound), `reset_none` (pool_reset_on_return=None), `no_listeners` (no checkout/checkin
listeners), `no_db` (the read served from a stored row: the app's own cost).

Run with a rendered MySQL project's interpreter, from its folder, with its package importable
(`PACKAGE=<package>`), both databases migrated and product 1 present in each:
    PACKAGE=xprof GENERATED_URL=mysql+asyncmy://root@127.0.0.1:3306/a \
    RAW_URL=mysql+asyncmy://root@127.0.0.1:3306/b \
    .venv/bin/python <template>/bench/mysql_read_cpu.py 1000 8 raw,base,no_read_timeout
"""

import asyncio
import importlib
import os
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "apps"))
os.environ["BENCH_DATABASE_URL"] = os.environ["RAW_URL"]
import raw_db

PACKAGE = os.environ["PACKAGE"]
xdb = importlib.import_module(f"{PACKAGE}.db")
Settings = importlib.import_module(f"{PACKAGE}.config").Settings
create_app = importlib.import_module(f"{PACKAGE}.main").create_app

N = int(sys.argv[1])
ROUNDS = int(sys.argv[2])
VARIANTS = sys.argv[3].split(",")
ORIGINAL = xdb.create_engine


def patched(variant):
    def create_engine(url, wait_seconds=5.0, **options):
        if variant == "reset_none":
            options["pool_reset_on_return"] = None
        if variant == "no_read_timeout":
            original_args = xdb.mysql_connect_args

            def args(wait):
                a = original_args(wait)
                del a["read_timeout"]
                return a

            xdb.mysql_connect_args = args
            try:
                engine = ORIGINAL(url, wait_seconds, **options)
            finally:
                xdb.mysql_connect_args = original_args
        else:
            engine = ORIGINAL(url, wait_seconds, **options)
        if variant == "no_listeners":
            engine.sync_engine.pool.dispatch.checkout.clear()  # measurement only
            engine.sync_engine.pool.dispatch.checkin.clear()
        return engine

    return create_engine


async def call(app, path):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    status = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def main():
    async with AsyncExitStack() as stack:
        apps = {}
        for v in VARIANTS:
            if v == "raw":
                app = raw_db.app
            else:
                xdb.create_engine = patched(v)
                app = create_app(
                    Settings(
                        environment="development",
                        log_level="WARNING",
                        database_url=os.environ["GENERATED_URL"],
                    )
                )
            await stack.enter_async_context(app.router.lifespan_context(app))
            xdb.create_engine = ORIGINAL
            assert await call(app, "/api/v1/products/1") == 200, v
            apps[v] = app
        repo = importlib.import_module(f"{PACKAGE}.products.repository")
        real_get = repo.ProductRepository.get

        stored = []  # the row the `no_db` contender answers every read with

        async def stored_get(self, product_id):
            if not stored:
                stored.append(await real_get(self, product_id))
            return stored[0]

        rates = {v: [] for v in VARIANTS}
        for r in range(ROUNDS):
            for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                if v == "no_db":
                    repo.ProductRepository.get = stored_get
                t = time.process_time()
                for _ in range(N):
                    await call(apps[v], "/api/v1/products/1")
                repo.ProductRepository.get = real_get
                rates[v].append((time.process_time() - t) / N * 1e6)
        base = statistics.median(rates[VARIANTS[0]])
        for v in VARIANTS:
            m = statistics.median(rates[v])
            rounds = [round(x) for x in rates[v]]
            print(
                f"{v:16s} median CPU {m:6.1f} us/request  {VARIANTS[0]}/this {base / m:.3f}  "
                f"rounds {rounds}"
            )


asyncio.run(main())
