"""Layer 4 under faults: dependencies dying under load, SIGTERM mid-burst, hostile input.

Each test starts a rendered service as a process on a free port, as users run it, and prints its
figures (visible with `-s`, or with `-rA` in the summary).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Projects
from faults import ENVELOPE, PRODUCT, PostgresDatabase, postgres_service, sqlite_service, sqlite_url
from support import RedisServer, ServiceProcess, TcpProxy
from variants import DEFAULT, POSTGRES_MEMORY, SQLITE_REDIS

from harness import seed_products

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
# What a process that leaked or crashed leaves in its log.
TROUBLE = ("Traceback", "ResourceWarning", "SAWarning", "unclosed", "Unclosed")


async def until_status(
    client: httpx.AsyncClient, url: str, status: int, seconds: float = 10
) -> float:
    """Poll `url` until it answers `status`; return how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if (await client.get(url)).status_code == status:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    pytest.fail(f"{url} did not answer {status} within {seconds}s")


def log_lines(output: str) -> list[dict[str, Any]]:
    """Every line the service logged; each one must be a JSON object."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# Redis killed under load


@dataclass(frozen=True)
class Read:
    started: float
    status: int
    cache: str


@dataclass
class RedisOutage:
    reads: list[Read] = field(default_factory=list)
    killed_at: float = 0.0
    restarted_at: float = 0.0
    settled_at: float = 0.0
    time_to_503: float = 0.0
    time_to_200: float = 0.0
    degraded: dict[str, Any] = field(default_factory=dict)

    def between(self, start: float, end: float = float("inf")) -> list[Read]:
        return [read for read in self.reads if start <= read.started < end]


READERS = 8
# After Redis is back, the cache rests a second after its last failure, then fills again.
SETTLE_SECONDS = 1.5


async def read_through_redis_outage(
    base_url: str, product_id: int, redis: RedisServer
) -> RedisOutage:
    """READERS clients read one product non-stop while Redis is killed, then restarted."""
    outage = RedisOutage()
    stop = asyncio.Event()
    read_url = f"{base_url}/api/v1/products/{product_id}"

    async def reader(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started = time.monotonic()
            response = await client.get(read_url)
            cache = response.headers.get("x-cache", "")
            outage.reads.append(Read(started, response.status_code, cache))

    async with (
        httpx.AsyncClient(timeout=10) as readers_client,
        httpx.AsyncClient(base_url=base_url, timeout=10) as probe,
    ):
        readers = [asyncio.create_task(reader(readers_client)) for _ in range(READERS)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(redis.kill)
        outage.killed_at = time.monotonic()
        outage.time_to_503 = await until_status(probe, "/health/ready", 503)
        outage.degraded = (await probe.get("/health/ready")).json()
        await asyncio.sleep(0.5)
        outage.restarted_at = time.monotonic()
        await asyncio.to_thread(redis.start)
        outage.time_to_200 = await until_status(probe, "/health/ready", 200)
        await asyncio.sleep(SETTLE_SECONDS)
        outage.settled_at = time.monotonic()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*readers)
    return outage


@pytest.mark.xdist_group(SQLITE_REDIS.id)
def test_redis_killed_under_load_costs_no_5xx_and_the_cache_comes_back(
    projects: Projects, redis_server: RedisServer, tmp_path: Path
) -> None:
    service = sqlite_service(projects, SQLITE_REDIS, tmp_path, APP_REDIS_URL=redis_server.url)
    with service:
        product = httpx.post(f"{service.url}/api/v1/products", json=PRODUCT).json()
        outage = asyncio.run(read_through_redis_outage(service.url, product["id"], redis_server))
    output = service.stop()

    before = outage.between(0, outage.killed_at)
    during = outage.between(outage.killed_at, outage.restarted_at)
    after = outage.between(outage.settled_at)
    server_errors = sum(read.status >= 500 for read in outage.reads)
    print(
        f"\nredis killed under load: {len(outage.reads)} reads by {READERS} concurrent clients "
        f"({len(during)} while Redis was down), {server_errors} answered 5xx; /health/ready "
        f"503 {outage.time_to_503:.2f}s after the kill, 200 {outage.time_to_200:.2f}s after "
        f"the restart; {sum(read.cache == 'HIT' for read in after)} of {len(after)} reads "
        f"hit the cache from {SETTLE_SECONDS}s after that"
    )
    assert {read.status for read in outage.reads} == {200}
    assert "HIT" in {read.cache for read in before}
    assert during
    assert {read.cache for read in during} == {"MISS"}
    assert outage.degraded["checks"]["redis"] == "unavailable"
    assert outage.time_to_503 < 1
    assert after
    assert {read.cache for read in after} == {"HIT"}
    assert service.process.returncode == 0, output
    assert "Traceback" not in output


# The database unreachable


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_database_outage_answers_503_envelopes_and_recovers(
    projects: Projects,
    postgres_database: PostgresDatabase,
    database_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    url = postgres_database.url_through(database_proxy)
    service = postgres_service(projects, tmp_path, url)
    with service, httpx.Client(base_url=service.url, timeout=10) as client:
        product = client.post("/api/v1/products", json=PRODUCT).json()
        one = f"/api/v1/products/{product['id']}"
        assert client.get(one).headers["x-cache"] == "MISS"
        # Another product in the cache, which no request below tries to change.
        other = client.post("/api/v1/products", json={**PRODUCT, "sku": "KT-2048-009"})
        untouched = f"/api/v1/products/{other.json()['id']}"
        assert client.get(untouched).headers["x-cache"] == "MISS"

        database_proxy.stop()
        started = time.monotonic()
        down = [
            client.get("/api/v1/products"),
            client.get("/api/v1/products/stats"),
            client.get("/api/v1/products/export"),
            client.get(f"/api/v1/products/{product['id'] + 2}"),
            client.post("/api/v1/products", json={**PRODUCT, "sku": "KT-2048-002"}),
            client.patch(one, json={"price": "21.50"}),
            client.delete(one),
        ]
        slowest = time.monotonic() - started
        cached = client.get(untouched)
        time_to_503 = asyncio.run(ready_after(service.url, 503, started))
        degraded = client.get("/health/ready").json()

        database_proxy.start()
        restarted = time.monotonic()
        time_to_200 = asyncio.run(ready_after(service.url, 200, restarted))
        listed = client.get("/api/v1/products")
        created = client.post("/api/v1/products", json={**PRODUCT, "sku": "KT-2048-003"})
    output = service.stop()

    print(
        f"\ndatabase unreachable: {len(down)} requests needing it answered "
        f"{dict(Counter(response.status_code for response in down))} within {slowest:.2f}s; "
        f"/health/ready 503 {time_to_503:.2f}s after the cut, 200 {time_to_200:.2f}s after "
        f"the database came back"
    )
    for response in down:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.json()["error"] == "SERVICE_UNAVAILABLE"
        assert response.json().keys() >= ENVELOPE
        assert response.json()["request_id"] == response.headers["x-request-id"]
        assert response.headers["retry-after"]
    # A product in the cache is still served, unless a write of it was tried: that write's
    # commit may have landed unseen, so its entry is gone.
    assert cached.status_code == 200
    assert cached.headers["x-cache"] == "HIT"
    assert degraded["checks"]["database"] == "unavailable"
    assert time_to_503 < 1
    assert listed.status_code == 200
    assert listed.json()["total"] == 2
    assert created.status_code == 201
    assert service.process.returncode == 0, output
    assert "Traceback" not in output


async def ready_after(base_url: str, status: int, since: float) -> float:
    """Seconds from `since` until /health/ready answers `status`."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        await until_status(client, "/health/ready", status)
    return time.monotonic() - since


# SIGTERM during a burst of slow requests

BURST = 8
EXPORT_ROWS = 50_000
GRACE_SECONDS = 20


@dataclass
class Burst:
    results: list[tuple[int, int]]
    refused_after_sigterm: bool
    exit_seconds: float
    returncode: int


async def export_burst_then_sigterm(service: ServiceProcess) -> Burst:
    """BURST concurrent CSV exports; SIGTERM once every one of them has its response started."""
    started = [asyncio.Event() for _ in range(BURST)]

    async def export(client: httpx.AsyncClient, response_started: asyncio.Event) -> tuple[int, int]:
        async with client.stream("GET", "/api/v1/products/export") as response:
            response_started.set()
            lines = 0
            async for chunk in response.aiter_bytes():
                lines += chunk.count(b"\n")
        return response.status_code, lines

    async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
        exports = [asyncio.create_task(export(client, event)) for event in started]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 30)
        service.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.5)
        refused = await asyncio.to_thread(connection_refused, service.port)
        results = await asyncio.gather(*exports)
    returncode = await asyncio.to_thread(service.process.wait, GRACE_SECONDS + 10)
    return Burst(results, refused, time.monotonic() - signalled, returncode)


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.xdist_group(DEFAULT.id)
def test_sigterm_mid_burst_finishes_every_accepted_request_then_exits_0(
    projects: Projects, tmp_path: Path
) -> None:
    service = sqlite_service(
        projects,
        DEFAULT,
        tmp_path,
        APP_GRACEFUL_TIMEOUT=str(GRACE_SECONDS),
        # Every export of the burst served (the cap on streams is tests/test_faults_export.py's).
        APP_MAX_STREAMS=str(BURST),
        # Unclosed sockets and files say so in the log.
        PYTHONWARNINGS="default::ResourceWarning",
    )
    service.wait_until_live()  # started: the migrations made the table
    seed_products(projects.installed(DEFAULT), DEFAULT.package, EXPORT_ROWS, sqlite_url(tmp_path))
    burst = asyncio.run(export_burst_then_sigterm(service))
    output = service.output

    complete = sum(result == (200, EXPORT_ROWS + 1) for result in burst.results)
    print(
        f"\nSIGTERM mid-burst: {BURST} CSV exports of {EXPORT_ROWS} rows in flight, {complete} "
        f"completed in full; a new connection after SIGTERM refused: "
        f"{burst.refused_after_sigterm}; exit code {burst.returncode} "
        f"{burst.exit_seconds:.2f}s after SIGTERM (graceful timeout {GRACE_SECONDS}s)"
    )
    assert burst.results == [(200, EXPORT_ROWS + 1)] * BURST
    assert burst.refused_after_sigterm
    assert burst.returncode == 0, output
    assert burst.exit_seconds < GRACE_SECONDS
    events = {line["event"] for line in log_lines(output)}
    assert "service stopped" in events
    assert not any("graceful shutdown exceeded" in event for event in events)
    assert [marker for marker in TROUBLE if marker in output] == []


# Hostile input

MAX_BODY_BYTES = 4096
# Every kind of text a field may meet: accents, CJK, right-to-left, astral plane, combining
# marks, a zero-width joiner sequence, a right-to-left override.
UNICODE_NAME = "Kaffeemühle ☕ 咖啡机 مطحنة 𝄞 é 👩‍🔬"
UNICODE_DESCRIPTION = "zero\u200bwidth, \u202eoverride\u202c, a\u0308, 🫖, ᚠᛇᚻ, Ωμέγα"


@dataclass(frozen=True)
class Probe:
    label: str
    method: str
    path: str
    status: int
    content: bytes | None = None
    content_type: str = "application/json"


PROBES = [
    Probe("malformed JSON", "POST", "/api/v1/products", 422, b'{"name": "Kettle",'),
    Probe("JSON that is not an object", "POST", "/api/v1/products", 422, b"[1, 2]"),
    Probe("body that is not UTF-8", "POST", "/api/v1/products", 400, b"\xff\xfe{"),
    Probe(
        "form instead of JSON",
        "POST",
        "/api/v1/products",
        422,
        b"name=Kettle&price=19.90",
        "application/x-www-form-urlencoded",
    ),
    Probe("XML instead of JSON", "POST", "/api/v1/products", 422, b"<product/>", "text/xml"),
    Probe("body over the limit", "POST", "/api/v1/products", 413, b"x" * (MAX_BODY_BYTES + 1)),
    Probe("patch over the limit", "PATCH", "/api/v1/products/1", 413, b" " * (MAX_BODY_BYTES * 4)),
    Probe(
        "NUL in a name",
        "POST",
        "/api/v1/products",
        422,
        json.dumps({**PRODUCT, "name": "Kettle\x00"}).encode(),
    ),
    Probe(
        "other script's digits in a sku",
        "POST",
        "/api/v1/products",
        422,
        json.dumps({**PRODUCT, "sku": "KT-\u0662\u0660\u0664\u0668-001"}).encode(),
    ),
    Probe("id 0", "GET", "/api/v1/products/0", 422),
    # Not digits: no product's path at all.
    Probe("negative id", "GET", "/api/v1/products/-1", 404),
    Probe("id above 32 bits", "GET", "/api/v1/products/2147483648", 422),
    Probe("id of 31 digits", "GET", "/api/v1/products/" + "9" * 31, 422),
    Probe("id not a number", "GET", "/api/v1/products/abc", 404),
    Probe("id with a fraction", "GET", "/api/v1/products/1.5", 404),
    Probe("id as an emoji", "GET", "/api/v1/products/%F0%9F%98%80", 404),
    Probe("id with a newline", "GET", "/api/v1/products/1%0Ainjected", 404),
    Probe("id as a NUL", "GET", "/api/v1/products/%00", 404),
    Probe("page 0", "GET", "/api/v1/products?page=0", 422),
    Probe("page of 31 digits", "GET", "/api/v1/products?page=" + "9" * 31, 422),
    Probe("size over 100", "GET", "/api/v1/products?size=101", 422),
    Probe("unknown route", "GET", "/api/v1/nothing-here", 404),
    Probe("wrong method", "PUT", "/api/v1/products/1", 405),
]


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given (httpx refuses some), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def get_live_with_request_id(port: int, raw_id: bytes) -> tuple[int, dict[str, str], bytes]:
    return raw_request(
        port,
        b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: "
        + raw_id
        + b"\r\nConnection: close\r\n\r\n",
    )


def too_large_in_chunks() -> Iterator[bytes]:
    for _ in range(8):
        yield b" " * 1024


@pytest.mark.xdist_group(DEFAULT.id)
def test_hostile_input_gets_envelopes_and_json_log_lines_never_a_trace(
    projects: Projects, tmp_path: Path
) -> None:
    service = sqlite_service(projects, DEFAULT, tmp_path, APP_MAX_BODY_BYTES=str(MAX_BODY_BYTES))
    long_id = "r" * 10_000
    with service, httpx.Client(base_url=service.url, timeout=10) as client:
        answers: dict[str, httpx.Response] = {}
        for probe in PROBES:
            headers = {"content-type": probe.content_type} if probe.content else {}
            answers[probe.label] = client.request(
                probe.method, probe.path, content=probe.content, headers=headers
            )
        answers["body over the limit, streamed"] = client.post(
            "/api/v1/products",
            content=too_large_in_chunks(),
            headers={"content-type": "application/json"},
        )
        unicode_product = {
            **PRODUCT,
            "name": UNICODE_NAME,
            "description": UNICODE_DESCRIPTION,
        }
        created = client.post("/api/v1/products", json=unicode_product)
        read = client.get(f"/api/v1/products/{created.json()['id']}")
        renamed = client.patch(
            f"/api/v1/products/{created.json()['id']}", json={"name": UNICODE_NAME[::-1]}
        )
        exported = client.get("/api/v1/products/export")
        long_id_answer = client.get("/health/live", headers={"X-Request-ID": long_id})

        raw_ids = {
            "non-ASCII bytes": b"caf\xc3\xa9-\xff",
            "a tab": b"abc\tdef",
            "a quote and braces": b'x"}{"smuggled": true',
        }
        raw_answers = {
            label: get_live_with_request_id(service.port, raw_id)
            for label, raw_id in raw_ids.items()
        }
        # A bare newline: read as the end of the header line, or the request refused by the
        # server's parser before the app sees it.
        newline_status, _, newline_body = get_live_with_request_id(
            service.port, b"abc\nsmuggled: yes"
        )
        still_live = client.get("/health/live")
    output = service.stop()
    lines = log_lines(output)

    sent = len(answers) + 5 + len(raw_answers) + 2
    statuses = Counter(response.status_code for response in answers.values())
    print(
        f"\nhostile input: {sent} requests; the {len(answers)} bad ones answered "
        f"{dict(sorted(statuses.items()))}, {sum(s >= 500 for s in statuses.elements())} 5xx; "
        f"the log: {len(lines)} lines, all JSON, {output.count('Traceback')} tracebacks"
    )
    access_ids = {line.get("request_id") for line in lines if line["logger"].endswith(".access")}
    expected = {probe.label: probe.status for probe in PROBES}
    expected["body over the limit, streamed"] = 413
    for label, response in answers.items():
        assert response.status_code == expected[label], (label, response.text)
        body = response.json()
        assert body.keys() >= ENVELOPE, label
        assert body["request_id"] == response.headers["x-request-id"], label
        assert body["request_id"] in access_ids, label

    assert created.status_code == 201, created.text
    assert (read.json()["name"], read.json()["description"]) == (
        UNICODE_NAME,
        UNICODE_DESCRIPTION,
    )
    assert renamed.json()["name"] == UNICODE_NAME[::-1]
    assert UNICODE_NAME[::-1] in exported.text

    assert long_id_answer.status_code == 200
    assert GENERATED_ID.fullmatch(long_id_answer.headers["x-request-id"])
    assert long_id not in output
    for label, (status, headers, _) in raw_answers.items():
        assert status == 200, label
        assert GENERATED_ID.fullmatch(headers["x-request-id"]), label
    logged_ids = {line["request_id"] for line in lines if "request_id" in line}
    # A bare newline ends a header line for Granian (RFC 9112 lets a server read it so): the id
    # is then `abc`, a sane token, and `smuggled` a header of its own. httptools refuses it.
    assert {i for i in logged_ids if not GENERATED_ID.fullmatch(i)} <= {"abc"}
    assert "smuggled" not in output
    assert newline_status in {200, 400}
    assert b"Traceback" not in newline_body
    assert still_live.status_code == 200
    assert "Traceback" not in output
    assert service.process.returncode == 0
