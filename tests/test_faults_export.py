"""Layer 4, hardening: slow readers of the CSV export cannot starve the other routes.

40 clients open the export, read a few bytes and stop reading, as a client on a stalled network
does, while the other routes' latency is measured against a run without them. A PostgreSQL
backend watcher (run with the service's own interpreter, which has the driver) measures how long
an export kept its database connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httpx
import pytest
from conftest import Projects
from faults import ENVELOPE, PostgresDatabase, postgres_service
from support import ServiceProcess
from variants import POSTGRES_MEMORY

from harness import seed_products

# Far more CSV than the socket buffers between a stalled reader and the service hold (under
# 1 MB with Internet-sized segments; up to 4 MiB on loopback's): about 7 MB.
ROWS = 100_000
SLOW_READERS = 40
# A small receive buffer: the reader's side holds little of what the service sends.
READER_RECEIVE_BUFFER = 4096
SEND_TIMEOUT = 2.0
# Longer than the send timeout: the service gives up on the reader before it reads on.
STALL_SECONDS = 8.0
READS = 600
READ_CONCURRENCY = 4
# A read that the readers starved would wait out their stalls or the send timeout (seconds); a
# p99 of tens of milliseconds moves with the suite's other worker by itself, ratio or not.
STARVED_SECONDS = SEND_TIMEOUT / 4
# A bound on each measurement: reads that queue for the pool take seconds each.
READ_SECONDS = 15.0
CLIENT_TIMEOUT = 15.0


@dataclass
class SlowReads:
    statuses: Counter[int] = field(default_factory=Counter)
    refusals: Counter[tuple[int, str]] = field(default_factory=Counter)
    refused_without_envelope: int = 0
    # For each export that started: bytes received in all, and whether its body was complete.
    exports: list[tuple[int, bool]] = field(default_factory=list)


def reader_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READER_RECEIVE_BUFFER)
    # An Internet-sized segment, not loopback's 64 KiB: the service's send buffer then grows as
    # it would for a remote client.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.setblocking(False)
    return sock


async def slow_reader(port: int, stop: asyncio.Event, reads: SlowReads) -> None:
    """Opens the export, reads a few bytes, stalls; again until `stop`. Refused, it waits as
    `Retry-After` says (at most until `stop`)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        sock = reader_socket()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        http = h11.Connection(h11.CLIENT)
        headers = [("Host", "127.0.0.1"), ("Connection", "close")]
        try:
            writer.write(http.send(h11.Request(method="GET", target=EXPORT, headers=headers)))
            writer.write(http.send(h11.EndOfMessage()))
            response = await next_event(http, reader, read_size=256)
            assert isinstance(response, h11.Response)
            reads.statuses[response.status_code] += 1
            if response.status_code != 200:
                await refused(response, await body_of(http, reader), stop, reads)
                continue
            await asyncio.sleep(STALL_SECONDS)
            reads.exports.append(await read_to_the_end(http, reader))
        finally:
            writer.close()


EXPORT = "/api/v1/products/export"


async def next_event(http: h11.Connection, reader: asyncio.StreamReader, read_size: int) -> object:
    while (event := http.next_event()) is h11.NEED_DATA:
        http.receive_data(await asyncio.wait_for(reader.read(read_size), CLIENT_TIMEOUT))
    return event


async def body_of(http: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    body = b""
    while isinstance(event := await next_event(http, reader, 65536), h11.Data):
        body += event.data
    return body


async def read_to_the_end(http: h11.Connection, reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Bytes of body received, and whether the body ended as HTTP says a whole one ends."""
    received = 0
    try:
        while isinstance(event := await next_event(http, reader, 65536), h11.Data):
            received += len(event.data)
    except h11.RemoteProtocolError:
        return received, False  # the connection closed mid-body
    return received, isinstance(event, h11.EndOfMessage)


async def refused(
    response: h11.Response, body: bytes, stop: asyncio.Event, reads: SlowReads
) -> None:
    headers = {name.decode(): value.decode() for name, value in response.headers}
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = {}
    if not (isinstance(envelope, dict) and envelope.keys() >= ENVELOPE):
        reads.refused_without_envelope += 1
        return
    reads.refusals[(response.status_code, envelope["error"])] += 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), float(headers.get("retry-after", "1")))


async def read_latencies(base_url: str, ids: list[int]) -> tuple[list[float], Counter[int]]:
    """Each product read once (so never from the cache), READ_CONCURRENCY at a time, for at
    most READ_SECONDS."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    pending = iter(ids)
    limits = httpx.Limits(max_connections=READ_CONCURRENCY)
    deadline = time.monotonic() + READ_SECONDS

    async def worker(client: httpx.AsyncClient) -> None:
        for product_id in pending:
            if time.monotonic() > deadline:
                return
            started = time.monotonic()
            try:
                status = (await client.get(f"/api/v1/products/{product_id}")).status_code
            except httpx.TimeoutException:
                status = 0
            latencies.append(time.monotonic() - started)
            statuses[status] += 1

    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT, limits=limits) as c:
        await asyncio.gather(*(worker(c) for _ in range(READ_CONCURRENCY)))
    return latencies, statuses


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def reads_under_slow_readers(
    service: ServiceProcess, ids: list[int]
) -> tuple[list[float], Counter[int], SlowReads]:
    reads = SlowReads()
    stop = asyncio.Event()
    readers = [
        asyncio.create_task(slow_reader(service.port, stop, reads)) for _ in range(SLOW_READERS)
    ]
    await asyncio.sleep(1.0)  # every reader has connected; the accepted ones have stalled
    latencies, statuses = await read_latencies(service.url, ids)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*readers), STALL_SECONDS + 2 * CLIENT_TIMEOUT)
    return latencies, statuses, reads


# Run with the service's interpreter: how long each transaction on the database stayed open.
WATCH_TRANSACTIONS = """
import asyncio, json, os, sys, time
import asyncpg

async def main(url, stop_file):
    connection = await asyncpg.connect(url)
    spans, most = {}, 0
    while not os.path.exists(stop_file):
        rows = await connection.fetch(
            "SELECT pid, xact_start, now() - xact_start AS age FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND xact_start IS NOT NULL"
        )
        for row in rows:
            spans[f"{row['pid']} {row['xact_start']}"] = row["age"].total_seconds()
        most = max(most, sum(row["age"].total_seconds() > 0.5 for row in rows))
        await asyncio.sleep(0.1)
    await connection.close()
    print(json.dumps({"longest": max(spans.values(), default=0.0), "most_open": most}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_slow_export_readers_do_not_starve_the_other_routes(
    projects: Projects, postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    project = projects.installed(POSTGRES_MEMORY)
    python = project / ".venv" / "bin" / "python"
    url = postgres_database.url()
    service = postgres_service(
        projects, tmp_path, url, APP_STREAM_SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT)
    )
    with service:
        seed_products(project, POSTGRES_MEMORY.package, ROWS, url)
        export_bytes = len(httpx.get(f"{service.url}/api/v1/products/export").content)
        asyncio.run(read_latencies(service.url, list(range(1, 51))))  # warm up
        alone, alone_statuses = asyncio.run(read_latencies(service.url, ids(100, READS)))
        stop_file = tmp_path / "stop-watching"
        dsn = postgres_database.url(scheme="postgresql")
        watch = [python, "-c", WATCH_TRANSACTIONS, dsn]
        watcher = subprocess.Popen(
            [*watch, stop_file],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            loaded, loaded_statuses, reads = asyncio.run(
                reads_under_slow_readers(service, ids(1000, READS))
            )
        finally:
            stop_file.touch()
            watched = json.loads(watcher.communicate(timeout=30)[0])
        # Again once the readers are gone: the machine's other load (the suite's other
        # worker) moves a p99 of a few hundred reads by itself, so the readers' effect is judged
        # against the slower of the two runs without them.
        after, after_statuses = asyncio.run(read_latencies(service.url, ids(500, READS)))
    output = service.stop()

    baseline = max(p99(alone), p99(after))
    ratio = p99(loaded) / baseline
    refusals = ", ".join(f"{n} {status} {code}" for (status, code), n in reads.refusals.items())
    complete = sum(whole for _, whole in reads.exports)
    most_received = max((received for received, _ in reads.exports), default=0)
    print(
        f"\n{SLOW_READERS} slow export readers ({ROWS} rows, {export_bytes} bytes of CSV; each "
        f"read 64 bytes then stalled {STALL_SECONDS}s; pool 10, send timeout {SEND_TIMEOUT}s): "
        f"uncached product reads p99 {p99(alone) * 1000:.1f} ms alone before and "
        f"{p99(after) * 1000:.1f} ms after, {p99(loaded) * 1000:.1f} ms with the readers (ratio "
        f"to the slower alone {ratio:.2f}; {len(alone)}, {len(after)} and {len(loaded)} reads, "
        f"{READ_CONCURRENCY} at a time; statuses {dict(alone_statuses)}, {dict(after_statuses)} "
        f"and {dict(loaded_statuses)}); exports answered {dict(reads.statuses)}; refused with the "
        f"envelope: {refusals or 'none'} ({reads.refused_without_envelope} without it); "
        f"{len(reads.exports)} exports started, {complete} ended complete, the most any got "
        f"{most_received} bytes; the longest an export held its database connection "
        f"{watched['longest']:.2f}s, at most {watched['most_open']} held at once"
    )
    assert set(alone_statuses) == set(after_statuses) == {200}
    assert set(loaded_statuses) == {200}
    assert ratio <= 2.0 or p99(loaded) < STARVED_SECONDS
    assert reads.refusals
    assert {key for key in reads.refusals} == {(503, "SERVICE_UNAVAILABLE")}
    assert reads.refused_without_envelope == 0
    # A stalled export is cut, never ended as if complete.
    assert reads.exports
    assert complete == 0
    assert most_received < export_bytes
    # Each export gave its database connection back while its reader was still stalled: the
    # buffers filled, then the send timeout passed.
    assert watched["longest"] < STALL_SECONDS
    assert "Traceback" not in output
    assert service.process.returncode == 0, output


def ids(first: int, count: int) -> list[int]:
    """Product ids read once each: spread over the table, none read before."""
    return list(range(first, first + count * 97, 97))
