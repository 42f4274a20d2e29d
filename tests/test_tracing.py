"""Layer 4 for tracing: a rendered service exports its spans to an OTLP/HTTP collector that the
test runs, and a collector that is down or slow costs the requests nothing."""

from __future__ import annotations

import gzip
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from support import (
    HoldingServer,
    QuietHandler,
    ServiceProcess,
    free_port,
    json_lines,
    logged_at,
    serving,
    timed_liveness_reads,
)
from variants import TRACING

PRODUCT = {"name": "Kettle", "price": "19.90", "category_id": 1, "sku": "KT-2048-001"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
REQUESTS = 200

pytestmark = pytest.mark.xdist_group(TRACING.id)


class Collector(HoldingServer):
    """An OTLP/HTTP trace receiver on a free loopback port, keeping the spans it is sent."""

    def __init__(self, *, hold: bool = False) -> None:
        super().__init__(ExportHandler, hold=hold)
        self.exports: list[ExportTraceServiceRequest] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        """Every span received, with its resource's string attributes."""
        with self.lock:
            exports = list(self.exports)
        return [
            ({a.key: a.value.string_value for a in rs.resource.attributes}, span)
            for export in exports
            for rs in export.resource_spans
            for scope in rs.scope_spans
            for span in scope.spans
        ]


class ExportHandler(QuietHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        if self.server.hold:
            self.server.released.wait(timeout=60)
        with self.server.lock:
            self.server.exports.append(ExportTraceServiceRequest.FromString(body))
        self.answer(ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


@pytest.fixture
def collector() -> Iterator[Collector]:
    yield from serving(Collector())


@pytest.fixture
def hung_collector() -> Iterator[Collector]:
    yield from serving(Collector(hold=True))


def service(projects: Projects, tmp_path: Path, endpoint: str, **env: str) -> ServiceProcess:
    return ServiceProcess(
        projects.installed(TRACING),
        TRACING.package,
        tmp_path / "service.log",
        APP_LOG_FORMAT="json",
        APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        # Batches leave every 100 ms (5 s by default), so exports happen while the test runs.
        OTEL_BSP_SCHEDULE_DELAY="100",
        **env,
    )


def test_service_exports_the_callers_trace_to_the_collector(
    projects: Projects, tmp_path: Path, collector: Collector
) -> None:
    with service(projects, tmp_path, collector.endpoint) as running_service:
        created = httpx.post(f"{running_service.url}/api/v1/products", json=PRODUCT).json()
        read = httpx.get(
            f"{running_service.url}/api/v1/products/{created['id']}",
            headers={"traceparent": TRACEPARENT, "X-Request-ID": "read-1"},
        )
    output = running_service.stop()

    assert read.status_code == 200
    assert running_service.process.returncode == 0, output
    assert "Traceback" not in output
    received = collector.spans()
    ours = [span for _, span in received if span.trace_id.hex() == TRACE_ID]
    [request] = [span for span in ours if span.kind == Span.SPAN_KIND_SERVER]
    assert request.name == "GET /api/v1/products/{product_id}"
    assert request.parent_span_id.hex() == "00f067aa0ba902b7"
    statements = [
        span
        for span in ours
        if any(a.key == "db.query.text" and a.value.string_value for a in span.attributes)
    ]
    assert statements, [span.name for span in ours]
    assert {span.parent_span_id for span in statements} == {request.span_id}
    assert {resource["service.name"] for resource, _ in received} == {"my-service"}
    # The access line of that request names the same trace and span.
    [access] = [line for line in json_lines(output) if line.get("request_id") == "read-1"]
    assert (access["trace_id"], access["span_id"]) == (TRACE_ID, request.span_id.hex())
    print(f"\n{len(received)} spans received by the collector, {len(ours)} in the caller's trace")


def test_unreachable_collector_costs_requests_nothing_and_is_said_once(
    projects: Projects, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with service(projects, tmp_path, nowhere) as running_service:
        durations = timed_liveness_reads(running_service.url, REQUESTS)
        time.sleep(0.5)  # a few export attempts fail meanwhile
    output = running_service.stop()

    assert running_service.process.returncode == 0, output
    assert "Traceback" not in output
    lines = json_lines(output)
    # Shutdown does not wait for a collector it cannot reach: the exporter would retry each batch
    # for seconds, and APP_GRACEFUL_TIMEOUT (10 s) would run out.
    shutdown_took = logged_at(lines, "service stopped") - logged_at(lines, "service stopping")
    assert shutdown_took < 2
    events = [line["event"] for line in lines]
    failing = [event for event in events if event.startswith("span export to")]
    assert failing == [
        f"span export to {nowhere}/v1/traces failed: spans are dropped until it answers"
    ]
    [lost] = [event for event in events if "spans were not exported" in event]
    # Every span was lost: the requests' and those of the migrations run at start-up.
    counted = re.match(r"(\d+) of (\d+) spans", lost)
    assert counted is not None
    assert int(counted[1]) == int(counted[2]) >= REQUESTS
    print(
        f"\ncollector down: {REQUESTS} reads, median {statistics.median(durations):.2f} ms, "
        f"slowest {max(durations):.2f} ms; shutdown took {shutdown_took:.2f} s; "
        f"the log said: {lost!r}"
    )


def test_console_exporter_prints_the_spans_without_a_collector(
    projects: Projects, tmp_path: Path
) -> None:
    """What the README offers to see traces locally: OTEL_TRACES_EXPORTER=console."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    with service(projects, tmp_path, nowhere, OTEL_TRACES_EXPORTER="console") as running_service:
        created = httpx.post(f"{running_service.url}/api/v1/products", json=PRODUCT).json()
        read = httpx.get(
            f"{running_service.url}/api/v1/products/{created['id']}",
            headers={"traceparent": TRACEPARENT},
        )
    output = running_service.stop()

    assert read.status_code == 200
    assert running_service.process.returncode == 0, output
    assert "Traceback" not in output
    assert '"name": "GET /api/v1/products/{product_id}"' in output
    assert f'"trace_id": "0x{TRACE_ID}"' in output
    assert "span export to" not in output
    assert "not exported" not in output


def test_hung_collector_delays_no_request_and_shutdown_ends_within_the_graceful_timeout(
    projects: Projects, tmp_path: Path, hung_collector: Collector
) -> None:
    graceful = 2
    running_service = service(
        projects,
        tmp_path,
        hung_collector.endpoint,
        APP_GRACEFUL_TIMEOUT=str(graceful),
        # The exporter itself would wait this long for each batch.
        OTEL_EXPORTER_OTLP_TIMEOUT="60",
    )
    with running_service:
        durations = timed_liveness_reads(running_service.url, REQUESTS)
        started = time.monotonic()
        output = running_service.stop(seconds=60)
        stopped_after = time.monotonic() - started

    assert running_service.process.returncode == 0, output
    assert "Traceback" not in output
    # No request waited for the collector, and shutdown gave up on it in time: the lifespan's
    # shutdown within the graceful timeout (a second of slack for a loaded machine), the whole
    # stop far within the 60 s the exporter would have waited.
    assert max(durations) < 1000
    lines = json_lines(output)
    shutdown_took = logged_at(lines, "service stopped") - logged_at(lines, "service stopping")
    assert shutdown_took < graceful + 1
    assert stopped_after < 30
    [lost] = [line["event"] for line in lines if "not exported" in line["event"]]
    print(
        f"\ncollector hung: {REQUESTS} reads, median {statistics.median(durations):.2f} ms, "
        f"slowest {max(durations):.2f} ms; the lifespan's shutdown took {shutdown_took:.2f} s "
        f"(graceful timeout {graceful} s), the process stopped {stopped_after:.1f} s after "
        f"SIGTERM; the log said: {lost!r}"
    )
