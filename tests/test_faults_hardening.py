"""Layer 4, hardening: bounded waits, a consistent cache, no 5xx from races, safe outputs.

Each test starts a rendered service as a process, attacks it (a dependency that hangs behind a
proxy that stops forwarding, concurrent clients racing on one product, hostile input) and prints
its figures. The tests of one variant share an xdist group, so one render serves them.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Projects
from faults import (
    ENVELOPE,
    PRODUCT,
    PostgresDatabase,
    json_logging_service,
    postgres_service,
    sqlite_service,
    sqlite_url,
)
from support import RedisServer, ServiceProcess, TcpProxy, Variant
from variants import DEFAULT, POSTGRES_MEMORY, SELF_HOSTED_DOCS, SQLITE_REDIS

# What the service is told to wait for its database, at most, in these tests.
DATABASE_TIMEOUT = 1.0
SECRET = "hardening-secret-that-is-long-enough-0123456789"


@dataclass(frozen=True)
class Timed:
    label: str
    seconds: float
    status: int | None  # None: no answer within the client's timeout
    response: httpx.Response | None


async def timed(label: str, request: Awaitable[httpx.Response]) -> Timed:
    started = time.monotonic()
    try:
        response = await request
    except httpx.TimeoutException:
        return Timed(label, time.monotonic() - started, None, None)
    return Timed(label, time.monotonic() - started, response.status_code, response)


def describe(results: list[Timed]) -> str:
    return ", ".join(f"{r.label} {r.status or 'no answer'} in {r.seconds:.2f}s" for r in results)


# 1. Database waits are bounded

CLIENT_TIMEOUT = 12.0


async def requests_while_the_database_hangs(base_url: str, product_id: int) -> list[Timed]:
    """More requests at once than the pool has connections, each needing the database."""
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        one = f"/api/v1/products/{product_id}"
        return list(
            await asyncio.gather(
                timed("uncached read", client.get(f"/api/v1/products/{product_id + 1}")),
                timed("list", client.get("/api/v1/products")),
                timed("stats", client.get("/api/v1/products/stats")),
                timed("export", client.get("/api/v1/products/export")),
                timed("create", client.post("/api/v1/products", json=PRODUCT)),
                timed("update", client.patch(one, json={"price": "21.50"})),
                timed("delete", client.delete(one)),
                timed("second list", client.get("/api/v1/products?page=2")),
            )
        )


async def until_served(base_url: str, path: str, seconds: float) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() - started < seconds:
            if (await client.get(path)).status_code == 200:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
    pytest.fail(f"{path} was not served within {seconds}s of the database's return")


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_hanging_database_answers_503_within_the_timeout_and_serves_again_at_once(
    projects: Projects,
    postgres_database: PostgresDatabase,
    database_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    service = postgres_service(
        projects,
        tmp_path,
        postgres_database.url_through(database_proxy),
        APP_DATABASE_POOL_SIZE="2",
        APP_DATABASE_TIMEOUT_SECONDS=str(DATABASE_TIMEOUT),
    )
    with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
        product = client.post("/api/v1/products", json=PRODUCT).json()
        # Both pooled connections open and idle, as on a service that has been serving.
        for _ in range(4):
            client.get("/api/v1/products")
        database_proxy.hang()
        down = asyncio.run(requests_while_the_database_hangs(service.url, product["id"]))
        database_proxy.resume()
        back = asyncio.run(until_served(service.url, "/api/v1/products", 10))
        # Every connection slot came back: as many requests at once as the pool holds.
        after = [client.get(f"/api/v1/products/{product['id']}") for _ in range(4)]
    output = service.stop()

    slowest = max(result.seconds for result in down)
    print(
        f"\ndatabase hanging (timeout {DATABASE_TIMEOUT}s, pool of 2, {len(down)} requests at "
        f"once): {describe(down)}; slowest {slowest:.2f}s; served again {back:.2f}s after the "
        "database came back"
    )
    for result in down:
        assert result.status == 503, (result.label, result.status)
        assert result.response is not None
        assert result.response.json().keys() >= ENVELOPE
        assert result.response.json()["error"] == "SERVICE_UNAVAILABLE"
        assert result.response.headers["retry-after"]
    # Each wait (pool checkout, connect, a command) is bounded by the timeout; a request makes
    # at most a checkout and one command, or a ping, a reconnect and a command.
    assert slowest < 3 * DATABASE_TIMEOUT + 1
    assert back < 3
    assert [response.status_code for response in after] == [200] * 4
    assert service.process.returncode == 0, output


# 2. Readiness answers within its probe's timeout


READY_PROBE_TIMEOUT = 3.0  # the Kubernetes probes' timeoutSeconds


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_ready_answers_within_the_probe_timeout_while_the_database_hangs(
    projects: Projects,
    postgres_database: PostgresDatabase,
    database_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    url = postgres_database.url_through(database_proxy)
    service = postgres_service(projects, tmp_path, url)
    with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
        assert client.get("/health/ready").status_code == 200
        database_proxy.hang()
        probes = []
        for _ in range(3):
            started = time.monotonic()
            response = client.get("/health/ready")
            probes.append((time.monotonic() - started, response))
        database_proxy.resume()
    output = service.stop()

    timings = ", ".join(f"{seconds:.2f}s" for seconds, _ in probes)
    print(
        f"\n/health/ready with the database hanging: 3 probes answered "
        f"{[response.status_code for _, response in probes]} in {timings} "
        f"(probe timeout {READY_PROBE_TIMEOUT}s)"
    )
    for seconds, response in probes:
        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "unavailable"
        assert seconds < READY_PROBE_TIMEOUT - 0.5
    assert service.process.returncode == 0, output


# 3. A write while Redis hangs


def stored_price(client: httpx.Client, product_id: int) -> str:
    """The product's price as the database has it: the list is never cached."""
    items = client.get("/api/v1/products", params={"size": 100}).json()["items"]
    return next(item["price"] for item in items if item["id"] == product_id)


@pytest.mark.xdist_group(SQLITE_REDIS.id)
def test_write_while_redis_hangs_leaves_no_old_version_to_read(
    projects: Projects, redis_proxy: TcpProxy, tmp_path: Path
) -> None:
    redis_url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    service = sqlite_service(projects, SQLITE_REDIS, tmp_path, APP_REDIS_URL=redis_url)
    with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
        product = client.post("/api/v1/products", json=PRODUCT).json()
        one = f"/api/v1/products/{product['id']}"
        client.get(one)
        cached = client.get(one)
        redis_proxy.hang()
        started = time.monotonic()
        patched = client.patch(one, json={"price": "21.50"})
        patch_seconds = time.monotonic() - started
        redis_proxy.resume()
        time.sleep(1.5)  # past the second the cache rests after a failure
        reads = [client.get(one) for _ in range(5)]
        stored = stored_price(client, product["id"])
    output = service.stop()

    served = Counter((read.json()["price"], read.headers["x-cache"]) for read in reads)
    print(
        f"\nPATCH while Redis hung: answered {patched.status_code} in {patch_seconds:.2f}s; the "
        f"database then held {stored}; once Redis was back, 5 reads served "
        f"{dict(served)} (price, X-Cache)"
    )
    assert cached.headers["x-cache"] == "HIT"
    if patched.status_code == 200:
        assert stored == "21.50"
    else:
        # Failing closed: 503 and nothing changed.
        assert patched.status_code == 503
        assert patched.json()["error"] == "SERVICE_UNAVAILABLE"
        assert patched.headers["retry-after"]
        assert stored == PRODUCT["price"]
    assert {read.json()["price"] for read in reads} == {stored}
    assert patch_seconds < 2
    assert service.process.returncode == 0, output


# 4. Reads racing a write, no fault


async def status_of(request: Awaitable[httpx.Response]) -> int:
    """The answer's status; 0 when the connection broke instead (the server closed it)."""
    try:
        return (await request).status_code
    except httpx.TransportError:
        return 0


ROUNDS = 300
READS_PER_ROUND = 6


async def race_reads_against_a_patch(base_url: str) -> tuple[int, int, Counter[int]]:
    """Each round: a fresh product, READS_PER_ROUND reads and one PATCH at once, then a read.

    Returns the rounds whose last read served another price than the PATCH answered, the rounds
    whose PATCH answered 200, and every status seen.
    """
    stale = patched = 0
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=READS_PER_ROUND + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT, limits=limits) as c:
        for round_ in range(ROUNDS):
            sku = f"RC-{round_:04d}-001"
            created = await c.post("/api/v1/products", json={**PRODUCT, "sku": sku})
            one = f"/api/v1/products/{created.json()['id']}"
            new_price = f"{20 + round_ % 50}.25"
            *reads, patch = await asyncio.gather(
                *(status_of(c.get(one)) for _ in range(READS_PER_ROUND)),
                status_of(c.patch(one, json={"price": new_price})),
            )
            statuses.update([*reads, patch])
            if patch == 200:
                patched += 1
                if (await c.get(one)).json()["price"] != new_price:
                    stale += 1
    return stale, patched, statuses


@pytest.mark.xdist_group(SQLITE_REDIS.id)
def test_reads_racing_a_write_never_cache_the_old_version(
    projects: Projects, redis_server: RedisServer, tmp_path: Path
) -> None:
    service = sqlite_service(
        projects, SQLITE_REDIS, tmp_path, APP_WORKERS="2", APP_REDIS_URL=redis_server.url
    )
    service.wait_until_live(120)  # two workers start on a busy machine
    started = time.monotonic()
    stale, patched, statuses = asyncio.run(race_reads_against_a_patch(service.url))
    seconds = time.monotonic() - started
    output = service.stop()

    print(
        f"\nreads racing a PATCH (2 workers, Redis): {ROUNDS} rounds of {READS_PER_ROUND} reads "
        f"and 1 PATCH at once in {seconds:.1f}s; {patched} PATCHes answered 200; {stale} rounds "
        f"then read the old price; statuses {dict(sorted(statuses.items()))}"
    )
    assert patched == ROUNDS
    assert stale == 0
    assert service.process.returncode == 0, output


# 5. Writes racing on one product


async def race_patches_against_a_delete(base_url: str, rounds: int) -> Counter[str]:
    """Each round: a fresh product, then two PATCHes and a DELETE of it at once."""
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        for round_ in range(rounds):
            product = {**PRODUCT, "sku": f"RD-{round_:04d}-001"}
            try:
                created = await client.post("/api/v1/products", json=product)
            except httpx.TransportError:
                outcomes["POST 0"] += 1
                continue
            one = f"/api/v1/products/{created.json()['id']}"
            first, second, deleted = await asyncio.gather(
                status_of(client.patch(one, json={"price": "21.50"})),
                status_of(client.patch(one, json={"name": "Renamed"})),
                status_of(client.delete(one)),
            )
            outcomes.update([f"PATCH {first}", f"PATCH {second}", f"DELETE {deleted}"])
    return outcomes


def race_writes(
    projects: Projects, variant: Variant, tmp_path: Path, rounds: int, **env: str
) -> Counter[str]:
    service = json_logging_service(
        projects, variant, tmp_path, APP_ENVIRONMENT="development", APP_WORKERS="2", **env
    )
    service.wait_until_live(120)
    outcomes = asyncio.run(race_patches_against_a_delete(service.url, rounds))
    output = service.stop()
    assert service.process.returncode == 0, output
    return outcomes


def assert_no_server_error(outcomes: Counter[str]) -> None:
    # 0: the connection broke, as it did after a 500 that did not say `Connection: close`.
    allowed = {"PATCH 200", "PATCH 404", "PATCH 409", "DELETE 204", "DELETE 404"}
    assert set(outcomes) <= allowed, dict(outcomes)


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_writes_racing_on_postgresql_answer_404_or_409_never_5xx(
    projects: Projects, postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    rounds = 160
    url = postgres_database.url()
    outcomes = race_writes(projects, POSTGRES_MEMORY, tmp_path, rounds, APP_DATABASE_URL=url)
    print(
        f"\nwrites racing on PostgreSQL (2 workers): {rounds} rounds of 2 PATCHes and a DELETE "
        f"of one product at once: {dict(sorted(outcomes.items()))}"
    )
    assert_no_server_error(outcomes)


@pytest.mark.xdist_group(DEFAULT.id)
def test_writes_racing_on_sqlite_answer_404_or_409_never_5xx(
    projects: Projects, tmp_path: Path
) -> None:
    rounds = 50
    outcomes = race_writes(
        projects, DEFAULT, tmp_path, rounds, APP_DATABASE_URL=sqlite_url(tmp_path)
    )
    print(
        f"\nwrites racing on SQLite (2 workers): {rounds} rounds of 2 PATCHes and a DELETE of one "
        f"product at once: {dict(sorted(outcomes.items()))}"
    )
    assert_no_server_error(outcomes)


# 8. Signed but absurd tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    """A token signed as the service signs them, built by hand (no JWT library here)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64url(signature.digest())}"


def absurd_tokens() -> dict[str, str]:
    now = int(time.time())
    valid = {"sub": "alice", "iat": now, "exp": now + 300}
    return {
        "exp in the year 2920 (2e10 and more read as ms)": hs256({**valid, "exp": 3 * 10**10}),
        "exp = 1e20": hs256({**valid, "exp": 1e20}),
        "iat = 1e20": hs256({**valid, "iat": 1e20}),
        "empty sub": hs256({**valid, "sub": ""}),
        "10 KB sub": hs256({**valid, "sub": "a" * 10_000}),
        "sub not a string": hs256({**valid, "sub": 42}),
        # Larger heads than APP_MAX_HEADER_BYTES (64 KiB) get 431 first (test_faults_limits.py).
        "48 KB token": hs256({**valid, "pad": "x" * 36_000}),
    }


@pytest.mark.xdist_group(SELF_HOSTED_DOCS.id)
def test_signed_but_absurd_tokens_answer_401_envelopes(projects: Projects, tmp_path: Path) -> None:
    service = sqlite_service(projects, SELF_HOSTED_DOCS, tmp_path, APP_SECRET_KEY=SECRET)
    now = int(time.time())
    sane = hs256({"sub": "alice", "iat": now, "exp": now + 300})
    answers: dict[str, httpx.Response | None] = {}
    with service:
        for label, token in absurd_tokens().items():
            # A client of its own each: a broken connection costs only that answer.
            with httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
                try:
                    answers[label] = client.get(
                        "/auth/me", headers={"Authorization": f"Bearer {token}"}
                    )
                except httpx.TransportError:
                    answers[label] = None
        accepted = httpx.get(f"{service.url}/auth/me", headers={"Authorization": f"Bearer {sane}"})
    output = service.stop()

    print(
        "\nsigned but absurd tokens on /auth/me: "
        + ", ".join(
            f"{label} {response.status_code if response else 'connection broken'}"
            for label, response in answers.items()
        )
        + f"; a sane token {accepted.status_code}"
    )
    for label, response in answers.items():
        assert response is not None, label
        assert response.status_code == 401, (label, response.text[:200])
        assert response.json().keys() >= ENVELOPE, label
        assert response.headers["www-authenticate"] == "Bearer", label
    assert accepted.status_code == 200
    assert service.process.returncode == 0, output


# 10. The schema and the behaviour agree


def flatten(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The branches of a schema, nested `anyOf`s unwrapped."""
    if "anyOf" not in schema:
        return [schema]
    return [branch for option in schema["anyOf"] for branch in flatten(option)]


def price_schema_allows(schema: dict[str, Any], value: float) -> bool:
    price = schema["components"]["schemas"]["ProductUpdate"]["properties"]["price"]
    branches = [b for b in flatten(price) if b.get("type") == "number"]
    for branch in branches:
        quotient = value / branch["multipleOf"] if "multipleOf" in branch else 1.0
        if (
            value > branch.get("exclusiveMinimum", float("-inf"))
            and value <= branch.get("maximum", float("inf"))
            and quotient == int(quotient)
        ):
            return True
    return False


def schema_allows_null_sku(schema: dict[str, Any]) -> bool:
    sku = schema["components"]["schemas"]["ProductUpdate"]["properties"]["sku"]
    return any(branch.get("type") == "null" for branch in flatten(sku))


@pytest.mark.xdist_group(DEFAULT.id)
def test_the_api_answers_as_its_schema_says(projects: Projects, tmp_path: Path) -> None:
    service = sqlite_service(projects, DEFAULT, tmp_path)
    with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
        schema = client.get("/openapi.json").json()
        one = f"/api/v1/products/{client.post('/api/v1/products', json=PRODUCT).json()['id']}"
        collection_405 = client.put("/api/v1/products")
        item_405 = client.put(one)
        patch_export = client.patch("/api/v1/products/export", json={"price": "1.00"})
        patch_stats = client.patch("/api/v1/products/stats", json={"price": "1.00"})
        null_sku = client.patch(one, json={"sku": None})
        tiny_price = client.patch(one, content=b'{"price": 5e-324}', headers=JSON)
        slash = client.get("/api/v1/products/", headers={"Host": "evil.example"})
    output = service.stop()

    print(
        f"\nschema against behaviour: PUT on the collection 405 Allow "
        f"{collection_405.headers.get('allow')!r}, on a product 405 Allow "
        f"{item_405.headers.get('allow')!r}; PATCH /export {patch_export.status_code}, /stats "
        f"{patch_stats.status_code}; sku null: schema allows {schema_allows_null_sku(schema)}, "
        f"answered {null_sku.status_code}; price 5e-324: schema allows "
        f"{price_schema_allows(schema, 5e-324)}, answered {tiny_price.status_code}; a trailing "
        f"slash with a forged Host: {slash.status_code} Location "
        f"{slash.headers.get('location')!r}"
    )
    allowed = {method.strip() for method in collection_405.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    allowed = {method.strip() for method in item_405.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed
    assert (patch_export.status_code, patch_stats.status_code) == (405, 405)
    assert null_sku.status_code == 422
    assert not schema_allows_null_sku(schema)
    assert tiny_price.status_code == 422
    assert not price_schema_allows(schema, 5e-324)
    assert "evil.example" not in slash.headers.get("location", "")
    assert service.process.returncode == 0, output


JSON = {"content-type": "application/json"}


# 11. More workers than an in-process cache can serve


@pytest.mark.parametrize(
    ("variant", "names"),
    [
        pytest.param(DEFAULT, "per worker", marks=pytest.mark.xdist_group(DEFAULT.id)),
        pytest.param(SQLITE_REDIS, "APP_REDIS_URL", marks=pytest.mark.xdist_group(SQLITE_REDIS.id)),
    ],
    ids=["memory", "redis-unset"],
)
def test_two_workers_on_an_in_process_cache_refuse_to_start(
    projects: Projects, tmp_path: Path, variant: Any, names: str
) -> None:
    project = projects.installed(variant)
    service = ServiceProcess(
        project,
        variant.package,
        tmp_path / "service.log",
        APP_ENVIRONMENT="production",
        APP_SECRET_KEY=SECRET,
        APP_WORKERS="2",
        APP_DATABASE_URL=sqlite_url(tmp_path),
    )
    started = time.monotonic()
    try:
        returncode = service.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        service.stop()
        pytest.fail(f"the service started with 2 workers on an in-process cache:\n{service.output}")
    seconds = time.monotonic() - started
    lines = [line for line in service.output.splitlines() if line.strip()]
    print(f"\n2 workers on an in-process cache, in production: exit {returncode} in {seconds:.2f}s")
    print(f"    it printed: {lines}")
    assert returncode != 0
    assert [line for line in lines if names in line and "APP_WORKERS=2" in line]
    assert "Traceback" not in service.output


# 12. CSV formula injection

FORMULA_NAMES = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rReturn"]


@pytest.mark.xdist_group(DEFAULT.id)
def test_csv_export_neutralises_formulas(projects: Projects, tmp_path: Path) -> None:
    service = sqlite_service(projects, DEFAULT, tmp_path)
    with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
        for index, name in enumerate(FORMULA_NAMES):
            product = {**PRODUCT, "name": name, "sku": f"FX-0000-{index:03d}"}
            assert client.post("/api/v1/products", json=product).status_code == 201
        exported = client.get("/api/v1/products/export")
    output = service.stop()

    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    names = [row["name"] for row in rows]
    dangerous = [name for name in names if name[:1] in ("=", "+", "-", "@", "\t", "\r")]
    print(f"\nCSV export of {len(rows)} formula-like names: {names}; {len(dangerous)} start live")
    assert dangerous == []
    assert names == [f"'{name}" for name in FORMULA_NAMES]
    assert {row["price"] for row in rows} == {PRODUCT["price"]}
    assert all(row["id"].isdigit() for row in rows)
    assert service.process.returncode == 0, output
