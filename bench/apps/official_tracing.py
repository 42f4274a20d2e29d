"""The generated service traced by OpenTelemetry's FastAPI instrumentation instead of its own
request-span middleware: `python official_tracing.py [--exclude-receive-send]`.

Run with the interpreter of a render with `tracing=true` and the Granian server, in the render's
folder, with `opentelemetry-instrumentation-fastapi` installed beside it (the benchmark installs
it; the service does not depend on it), and this folder on PYTHONPATH (Granian's worker imports
`create_app` from here). It reads the same APP_* and OTEL_* variables as `python -m <package>`.

Everything else is the generated service's own and unchanged: the app comes from the composition
root's public `compose`, given the render's features and its middleware list less the one entry
`tracing_middleware`; its lifespan still sets up the tracing module's SDK (the tracer provider,
sampler, ids, batch processor and OTLP exporter) and its database statement spans. The
instrumentation takes the global tracer provider, which that lifespan sets, so both tracers
record into the same SDK. Start-up is `python -m <package>`'s: logging, the configuration check,
the workers' preparation, then Granian with the service's own server options, the target aside.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from granian import Granian

# The package of every render that the benchmark makes (bench/project.py, PACKAGE).
from my_service import main as service
from my_service.__main__ import check_configuration, prepare_workers
from my_service.config import get_settings
from my_service.logging import configure_logging
from my_service.server import pass_on_the_first_stop_signal_only, server_options
from my_service.tracing import tracing_middleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

# How the command line tells Granian's worker, which calls `create_app`, to pass `exclude_spans`.
EXCLUDE_RECEIVE_SEND = "BENCH_OTEL_EXCLUDE_RECEIVE_SEND"
# The instrumentation's spans of each ASGI `receive` and `send` call (two sends per response).
RECEIVE_SEND: list[Literal["receive", "send"]] = ["receive", "send"]


def create_app() -> FastAPI:
    """The generated app less its request-span middleware, instrumented by FastAPIInstrumentor."""
    settings = get_settings()
    middleware = [
        entry for entry in service.middleware(settings) if entry.cls is not tracing_middleware
    ]
    app = service.compose(settings, service.FEATURES, middleware)
    excluded = RECEIVE_SEND if os.environ.get(EXCLUDE_RECEIVE_SEND) == "true" else None
    FastAPIInstrumentor.instrument_app(app, exclude_spans=excluded)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--exclude-receive-send", action="store_true", help='exclude_spans=["receive", "send"]'
    )
    if parser.parse_args().exclude_receive_send:
        os.environ[EXCLUDE_RECEIVE_SEND] = "true"
    settings = get_settings()
    configure_logging(settings)
    asyncio.run(check_configuration(settings))
    prepare_workers(settings)
    options = server_options(settings)
    options["target"] = f"{Path(__file__).stem}:create_app"
    server = Granian(**options)
    server.on_startup(pass_on_the_first_stop_signal_only)
    server.serve()


if __name__ == "__main__":
    main()
