"""A stand-in OpenTelemetry collector: accepts OTLP/HTTP exports and discards them.

The traced servers export their spans here, so the benchmark counts what exporting costs them
(the SDK's batching thread serializes and sends every span) without a collector's own CPU.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.exports += 1  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per export would flood the benchmark's output."""


class OtlpSink:
    """`with OtlpSink() as sink:` listens on `sink.endpoint` until the block ends."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.exports = 0  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def exports(self) -> int:
        return int(self._server.exports)  # type: ignore[attr-defined]

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
