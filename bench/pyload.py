"""Fallback load generator when wrk is missing: keep-alive HTTP/1.1 GETs over asyncio streams.

Prints the same one-line JSON summary as bench/wrk_summary.lua. It is slower than wrk, so with
it the absolute figures understate every server alike; the ratios stay comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit


async def _connection(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float]
) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection(host, port)
    status_errors = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if head[9:10] not in (b"2", b"3"):
                status_errors += 1
    except (OSError, asyncio.IncompleteReadError):
        return status_errors, 1
    finally:
        writer.close()
    return status_errors, 0


async def _drive(url: str, connections: int, seconds: float) -> dict[str, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    outcomes = await asyncio.gather(
        *(_connection(host, port, request, deadline, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "p50_us": int(cuts[49] * 1e6),
        "p99_us": int(cuts[98] * 1e6),
        "socket_errors": sum(socket for _, socket in outcomes),
        "status_errors": sum(status for status, _ in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_drive(args.url, args.connections, args.seconds))))


if __name__ == "__main__":
    main()
