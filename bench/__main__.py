"""`python -m bench [--smoke] [--only SECTIONS]`: render, install, measure side by side, write the
results.

Renders the variants it needs from this template's working tree into a temporary folder,
installs each with uv, serves them (the generated ones as `python -m <package>` does, the
baselines on the same servers) pinned to one CPU while the load generator runs on another,
alternates the servers round by round, and writes a Markdown table of medians and ratios
(`bench/results/latest.md`) with a plot next to it.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from harness import free_port, seed_products

from . import products
from .load import POST_PRODUCTS_SCRIPT, LoadGenerator
from .otlp_sink import OtlpSink
from .project import PACKAGE, Project, clean_env, render
from .report import MIB, Report, Row, missing_row, p99_row, ratio_row
from .rounds import Contender, Ratio, Runs, alternate
from .server import Server

BENCH_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = BENCH_DIR.parent
SERVE = BENCH_DIR / "apps" / "serve.py"
OFFICIAL_TRACING_APP = BENCH_DIR / "apps" / "official_tracing.py"
RESULTS_DIR = BENCH_DIR / "results"
EXPORT_BUDGET_BYTES = 50 * MIB
# The budget (../shared/DESIGN.md, section 5): each ratio is measured side by side in one run.
# Liveness: the default service against what a user writes by hand on FastAPI's default server,
# and each server's render against bare FastAPI on that same server.
LIVENESS_BUDGET = 1.00
SAME_SERVER_LIVENESS_BUDGET = 0.85
MEMORY_HIT_BUDGET = 0.60
REDIS_HIT_BUDGET = 0.45
POSTGRES_READ_BUDGET = 0.40
SQLITE_READ_BUDGET = 0.45
MYSQL_READ_BUDGET = 0.40
TRACING_SAMPLED_BUDGET = 0.90
# error_reporting=sentry, a DSN set and no error raised: what reporting costs every request.
ERROR_REPORTING_BUDGET = 0.90
# The tails at the profile's connections (more than the database pool holds): each p99 at most
# this many times its baseline's, measured side by side.
TAIL_BUDGET = 2.0
WALL_BUDGET_SECONDS = 20 * 60
# A database of its own on the shared Redis, so the benchmark never touches other users' keys.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
# The server the PostgreSQL measures create their two databases on (and drop them after).
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# The same for the MySQL measures (MySQL 8 or MariaDB 10.11+).
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
# Rows in each measured database: a list page reads 20 of them and counts them all.
SEEDED_PRODUCTS = 1_000
# High enough that no request of the benchmark is limited: it measures the counting.
UNREACHED_RATE_LIMIT = "1000000000/minute"
LIVE = "/health/live"

GENERATED = "generated service (default render, Granian)"
GENERATED_UVICORN = "generated service (server=uvicorn)"
BARE = "bare FastAPI on uvicorn"
BARE_GRANIAN = "bare FastAPI on Granian"
BARE_ROUTER = "bare FastAPI on uvicorn, route in an APIRouter"
SEED = "seed BaseHTTPMiddleware"
MEMORY_HIT = "product read, memory cache hit"
MEMORY_LIVE = "liveness, default render, beside the cached reads"
UVICORN_HIT = "product read, memory cache hit (server=uvicorn)"
UVICORN_LIVE = "liveness, server=uvicorn, beside the cached reads"
REDIS_LIVE = "liveness, cache=redis"
REDIS_HIT = "product read, Redis cache hit (cache=redis)"
TRACED_LIVE = "liveness, tracing, every request sampled"
TRACED_HIT = "product read, memory cache hit, tracing, every request sampled"
SAMPLED_LIVE = "liveness, tracing, parentbased_traceidratio 0.1"
SAMPLED_HIT = "product read, memory cache hit, tracing, parentbased_traceidratio 0.1"
UNSAMPLED_LIVE = "liveness, tracing, always_off"
UNSAMPLED_HIT = "product read, memory cache hit, tracing, always_off"
UNEXPORTED_LIVE = "liveness, tracing, every request sampled, exporter none"
UNEXPORTED_HIT = "product read, memory cache hit, tracing, every request sampled, exporter none"
REPORTING_LIVE = "liveness, error_reporting=sentry"
REPORTING_HIT = "product read, memory cache hit, error_reporting=sentry"
LIMITED_HIT = "product read, memory cache hit, rate limit counted in process"
LIMITED_REDIS_HIT = "product read, memory cache hit, rate limit counted in Redis"
SQLITE_READ = "product read by id, SQLite, cache=none"
RAW_SQLITE_READ = "FastAPI + raw aiosqlite, read by id"
POSTGRES_READ = "product read by id, PostgreSQL, cache=none"
RAW_POSTGRES_READ = "FastAPI + raw asyncpg, read by id"
POSTGRES_LIST = "product list page (20), PostgreSQL"
RAW_POSTGRES_LIST = "FastAPI + raw asyncpg, list page (20)"
POSTGRES_CREATE = "product create (POST), PostgreSQL"
RAW_POSTGRES_CREATE = "FastAPI + raw asyncpg, create (POST)"
# The traced PostgreSQL read: one render (tracing=true), served off, unsampled and at 0.1.
TRACED_OFF_POSTGRES_READ = "product read by id, PostgreSQL, tracing=true, OTEL_SDK_DISABLED"
TRACED_SAMPLED_POSTGRES_READ = "product read by id, PostgreSQL, tracing at 0.1"
TRACED_UNSAMPLED_POSTGRES_READ = "product read by id, PostgreSQL, tracing, always_off"
MYSQL_READ = "product read by id, MySQL, cache=none"
RAW_ASYNCMY_READ = "FastAPI + raw asyncmy, read by id"
RAW_AIOMYSQL_READ = "FastAPI + raw aiomysql, read by id"
MYSQL_LIST = "product list page (20), MySQL"
RAW_MYSQL_LIST = "FastAPI + raw asyncmy, list page (20)"
MYSQL_CREATE = "product create (POST), MySQL"
RAW_MYSQL_CREATE = "FastAPI + raw asyncmy, create (POST)"


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int
    seconds: float
    warmup_seconds: float
    pause_seconds: float
    connections: int
    export_rows: tuple[int, ...]


FULL = Profile("full", 4, 6, 2, 1, 32, (10_000, 100_000, 1_000_000))
SMOKE = Profile("smoke", 2, 1, 0, 0, 16, (200, 1_000, 5_000))
# The traced servers send a batch of spans at least this often (the SDK's default is 5 s), and
# a full run pauses longer than that after each server's turn (Profile.pause_seconds).
SPAN_BATCH_DELAY_MS = "500"


# The measures of the budget table.
GENERATED_VS_APP_ROUTE = (
    "Liveness: generated service (Granian) / bare FastAPI on uvicorn (route on the app), throughput"
)
GENERATED_VS_APP_ROUTE_CPU = (
    "Liveness: generated service (Granian) / bare FastAPI on uvicorn (route on the app), CPU time"
    " per request (bare / generated)"
)
GENERATED_VS_APP_ROUTE_P99 = (
    "Liveness: generated service (Granian) / bare FastAPI on uvicorn (route on the app), p99"
)
GRANIAN_VS_SAME_SERVER = "Liveness: generated service on Granian / bare FastAPI on Granian"
UVICORN_VS_SAME_SERVER = "Liveness: generated service on uvicorn / bare FastAPI on uvicorn"
GENERATED_VS_BARE = (
    "Liveness: generated service on uvicorn / bare FastAPI on uvicorn (same route in an APIRouter)"
)
GRANIAN_VS_UVICORN_LIVE = "Liveness: generated service, Granian / uvicorn"
BARE_GRANIAN_VS_UVICORN = "Liveness: bare FastAPI, Granian / uvicorn"
ROUTER_VS_APP_ROUTE = (
    "Bare FastAPI on uvicorn: route in an APIRouter / on the app itself (include_router's cost)"
)
SEED_VS_BARE = "Seed BaseHTTPMiddleware / bare FastAPI, throughput"
GENERATED_VS_SEED = "Generated service / seed BaseHTTPMiddleware, throughput"
MEMORY_HIT_VS_LIVE = "Product read, memory cache hit / the same service's liveness"
UVICORN_HIT_VS_LIVE = "Product read, memory cache hit / the same service's liveness, server=uvicorn"
GRANIAN_VS_UVICORN_HIT = "Product read, memory cache hit: Granian / uvicorn"
REDIS_HIT_VS_LIVE = "Product read, Redis cache hit / the same service's liveness"
REDIS_VS_MEMORY = "Product read, Redis cache hit / memory cache hit"
SQLITE_VS_RAW = "Product read by id, SQLite / FastAPI + raw aiosqlite"
POSTGRES_VS_RAW = "Product read by id, PostgreSQL / FastAPI + raw asyncpg"
POSTGRES_LIST_VS_RAW = "Product list page (20), PostgreSQL / FastAPI + raw asyncpg"
POSTGRES_CREATE_VS_RAW = "Product create, PostgreSQL / FastAPI + raw asyncpg"
MYSQL_VS_RAW = "Product read by id, MySQL / FastAPI + raw asyncmy"
MYSQL_LIST_VS_RAW = "Product list page (20), MySQL / FastAPI + raw asyncmy"
MYSQL_CREATE_VS_RAW = "Product create, MySQL / FastAPI + raw asyncmy"
AIOMYSQL_VS_ASYNCMY = "Read by id, FastAPI + raw aiomysql / FastAPI + raw asyncmy"
TRACED_LIVE_VS_OFF = "Tracing, every request sampled / off: liveness"
TRACED_HIT_VS_OFF = "Tracing, every request sampled / off: memory cache hit"
SAMPLED_LIVE_VS_OFF = "Tracing, parentbased_traceidratio 0.1 / off: liveness"
SAMPLED_HIT_VS_OFF = "Tracing, parentbased_traceidratio 0.1 / off: memory cache hit"
# What the 0.1 rows are made of: every request pays for its (unsampled) span and its ids in the
# logs; a sampled one also for recording its span, and for exporting it.
UNSAMPLED_LIVE_VS_OFF = "Tracing, always_off (no request sampled) / off: liveness"
UNSAMPLED_HIT_VS_OFF = "Tracing, always_off (no request sampled) / off: memory cache hit"
UNEXPORTED_LIVE_VS_OFF = "Tracing, every request sampled, exporter none / off: liveness"
UNEXPORTED_HIT_VS_OFF = "Tracing, every request sampled, exporter none / off: memory cache hit"
REPORTING_LIVE_VS_OFF = "Error reporting (Sentry SDK, DSN set) / off: liveness"
REPORTING_HIT_VS_OFF = "Error reporting (Sentry SDK, DSN set) / off: memory cache hit"
LIMITED_VS_OFF = "Rate limit counted in process / off: memory cache hit"
LIMITED_REDIS_VS_OFF = "Rate limit counted in Redis / off: memory cache hit"
SAMPLED_POSTGRES_VS_OFF = "Tracing, parentbased_traceidratio 0.1 / off: PostgreSQL read by id"
SAMPLED_POSTGRES_CPU = (
    "Tracing, parentbased_traceidratio 0.1 / off: PostgreSQL read by id, CPU time per request "
    "(off / traced)"
)
UNSAMPLED_POSTGRES_VS_OFF = "Tracing, always_off / off: PostgreSQL read by id"
REDIS_VS_MEMORY_P99 = "p99: product read, Redis cache hit / memory cache hit"
POSTGRES_LIST_VS_RAW_P99 = "p99: product list page (20), PostgreSQL / FastAPI + raw asyncpg"
POSTGRES_VS_RAW_P99 = "p99: product read by id, PostgreSQL / FastAPI + raw asyncpg"
WALL_TIME = "Whole benchmark wall time"

# Tracing by the generated request-span middleware against OpenTelemetry's FastAPI
# instrumentation (opentelemetry-instrumentation-fastapi) in its place, as is and without its
# spans of each ASGI receive and send; both on the generated tracing module's SDK set-up. Each
# row: the CPU time that tracing adds to a request over the same render with the SDK disabled.
OURS = "request-span middleware"
OFFICIAL = "FastAPIInstrumentor"
OFFICIAL_EXCLUDING = "FastAPIInstrumentor, exclude_spans receive and send"
TRACERS = (OURS, OFFICIAL, OFFICIAL_EXCLUDING)
SAMPLERS: dict[str, dict[str, str]] = {
    "parentbased_traceidratio 0.1": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "parentbased_always_on": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}
OFFICIAL_LIVE = "liveness"
OFFICIAL_HIT = "memory cache hit"
OFFICIAL_POSTGRES_READ = "PostgreSQL read by id"
# The goal: ours adds at most half of what the instrumentation adds. The rule: were the
# instrumentation without its receive and send spans within 1.3x of ours, the generated service
# would rather use it (less code of its own for a team to own).
OURS_VS_OFFICIAL_BUDGET = 0.50
SWITCH_WITHIN = 1.30


def official_server_name(path: str, tracer: str | None = None, sampler: str = "") -> str:
    if tracer is None:
        return f"{path}, tracing=true, OTEL_SDK_DISABLED"
    return f"{path}, {tracer}, {sampler}"


def ours_vs_official(path: str, sampler: str) -> str:
    return f"Tracing CPU added per request, ours / {OFFICIAL}: {path}, {sampler}"


def excluding_vs_ours(path: str, sampler: str) -> str:
    return f"Tracing CPU added per request, {OFFICIAL} with exclude_spans / ours: {path}, {sampler}"


def official_measures(paths: Sequence[str]) -> list[str]:
    return [
        measure(path, sampler)
        for path in paths
        for sampler in SAMPLERS
        for measure in (ours_vs_official, excluding_vs_ours)
    ]


# Each feature's measures, in table order: all are reported (a value, or why there is none).
LIVENESS_MEASURES = [
    GENERATED_VS_APP_ROUTE,
    GENERATED_VS_APP_ROUTE_CPU,
    GENERATED_VS_APP_ROUTE_P99,
    GRANIAN_VS_SAME_SERVER,
    UVICORN_VS_SAME_SERVER,
    GRANIAN_VS_UVICORN_LIVE,
    BARE_GRANIAN_VS_UVICORN,
    GENERATED_VS_BARE,
    ROUTER_VS_APP_ROUTE,
    SEED_VS_BARE,
    GENERATED_VS_SEED,
]
FEATURE_MEASURES = [
    MEMORY_HIT_VS_LIVE,
    UVICORN_HIT_VS_LIVE,
    GRANIAN_VS_UVICORN_HIT,
    REDIS_HIT_VS_LIVE,
    REDIS_VS_MEMORY,
    TRACED_LIVE_VS_OFF,
    TRACED_HIT_VS_OFF,
    SAMPLED_LIVE_VS_OFF,
    SAMPLED_HIT_VS_OFF,
    UNSAMPLED_LIVE_VS_OFF,
    UNSAMPLED_HIT_VS_OFF,
    UNEXPORTED_LIVE_VS_OFF,
    UNEXPORTED_HIT_VS_OFF,
    REPORTING_LIVE_VS_OFF,
    REPORTING_HIT_VS_OFF,
    LIMITED_VS_OFF,
    LIMITED_REDIS_VS_OFF,
]
DATABASE_MEASURES = [SQLITE_VS_RAW, POSTGRES_VS_RAW, POSTGRES_LIST_VS_RAW, POSTGRES_CREATE_VS_RAW]
MYSQL_MEASURES = [MYSQL_VS_RAW, MYSQL_LIST_VS_RAW, MYSQL_CREATE_VS_RAW, AIOMYSQL_VS_ASYNCMY]
TRACED_DATABASE_MEASURES = [
    SAMPLED_POSTGRES_VS_OFF,
    SAMPLED_POSTGRES_CPU,
    UNSAMPLED_POSTGRES_VS_OFF,
]
# Measured on the servers of the features and databases sections when those run; `--only tails`
# serves just the servers these need.
TAIL_MEASURES = [REDIS_VS_MEMORY_P99, POSTGRES_LIST_VS_RAW_P99, POSTGRES_VS_RAW_P99]
OFFICIAL_CACHED_MEASURES = official_measures([OFFICIAL_LIVE, OFFICIAL_HIT])
OFFICIAL_POSTGRES_MEASURES = official_measures([OFFICIAL_POSTGRES_READ])
OFFICIAL_TRACING_MEASURES = [*OFFICIAL_CACHED_MEASURES, *OFFICIAL_POSTGRES_MEASURES]
# What `--only` can pick, and the measures each reports.
SECTIONS = (
    "liveness",
    "features",
    "databases",
    "mysql",
    "traced-database",
    "tails",
    "official-tracing",
    "export",
)
# Sections run only when `--only` names them: a comparison that informs a design choice rather
# than a budget that every run judges (14 servers; 846 s of a full run here, render included).
ON_REQUEST = ("official-tracing",)
DEFAULT_SECTIONS = tuple(section for section in SECTIONS if section not in ON_REQUEST)


def budget_rows(profile: Profile) -> list[str]:
    """The measures that every run reports (a value, or why it has none), in table order."""
    return [
        *LIVENESS_MEASURES,
        *FEATURE_MEASURES,
        *DATABASE_MEASURES,
        *MYSQL_MEASURES,
        *TRACED_DATABASE_MEASURES,
        *TAIL_MEASURES,
        *OFFICIAL_TRACING_MEASURES,
        *(export_measure(rows) for rows in profile.export_rows),
        WALL_TIME,
    ]


def section_rows(section: str, profile: Profile) -> list[str]:
    return {
        "liveness": LIVENESS_MEASURES,
        "features": FEATURE_MEASURES,
        "databases": DATABASE_MEASURES,
        "mysql": MYSQL_MEASURES,
        "traced-database": TRACED_DATABASE_MEASURES,
        "tails": TAIL_MEASURES,
        "official-tracing": OFFICIAL_TRACING_MEASURES,
        "export": [export_measure(rows) for rows in profile.export_rows],
    }[section]


def added_cpu_us(traced: Runs, off: Runs) -> float:
    """The median over rounds of the CPU time per request that `traced` spent beyond `off` in
    the same round."""
    return statistics.median(
        t.cpu_us_per_request - o.cpu_us_per_request
        for t, o in zip(traced.rounds, off.rounds, strict=True)
    )


# The release of the contrib instrumentations that goes with a render's OpenTelemetry SDK: they
# pin the semantic conventions package of their own version.
INSTRUMENTATION_RELEASE = (
    "import importlib.metadata as m; print(m.version('opentelemetry-semantic-conventions'))"
)


def export_measure(rows: int) -> str:
    return f"CSV export peak RSS growth, {rows:,} rows"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def _wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not installed"
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0].split(" Copyright")[0]


def _versions(project: Project) -> str:
    script = (
        "import importlib.metadata as m, platform;"
        "print('Python ' + platform.python_version(), *(f'{d} {m.version(d)}' for d in "
        "('fastapi', 'starlette', 'granian', 'pydantic', 'uvloop')), sep=', ')"
    )
    result = subprocess.run(
        [project.python, "-c", script], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def _reachable(url: str, default_port: int = 6379) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


class Bench:
    """One run: the renders, the servers and the rows of the report, filled in as measured."""

    def __init__(self, args: argparse.Namespace, profile: Profile, workdir: Path) -> None:
        self.profile = profile
        self.template: Path = args.template
        self.workdir = workdir
        self.redis_url: str = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
        self.postgres_url: str = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
        self.mysql_url: str = os.environ.get("BENCH_MYSQL_URL", DEFAULT_MYSQL_URL)
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpu = cpus[0] if pinned else None
        self.load = LoadGenerator(
            profile.connections,
            cpus[1] if pinned else None,
            use_wrk=args.load_generator != "python",
        )
        self.secret = secrets.token_urlsafe(48)
        self.sections: tuple[str, ...] = args.only or DEFAULT_SECTIONS
        self._postgres: Project | None = None
        self.failed = False
        self.report = Report(
            title=f"Benchmark ({profile.name} run"
            + (f", --only {','.join(args.only)})" if args.only else ")"),
            setup=[
                f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} CPUs "
                f"({_cpu_model()}), load average at start {_load_average()}",
                f"Load generator: {self.load.name}"
                + (f" ({_wrk_version()})" if self.load.wrk else "")
                + ", "
                f"{profile.connections} keep-alive connections"
                + (
                    f"; servers pinned to CPU {self.server_cpu}, load generator to CPU {cpus[1]}"
                    if pinned
                    else "; no CPU pinning (fewer than 2 CPUs or no taskset)"
                ),
                f"{profile.rounds} rounds of {profile.seconds:g} s per server, the servers' order "
                f"reversed every other round, a pause of {profile.pause_seconds:g} s after each "
                f"server's turn (the traced servers send their spans at least every "
                f"{SPAN_BATCH_DELAY_MS} ms); results are medians, ratios are medians of each "
                f"round's back-to-back pair",
                "Every server: 1 worker, uvloop; Granian over HTTP/1.1, uvicorn with httptools; no "
                "server access log; the generated services run as `python -m <package>` with "
                "APP_ENVIRONMENT=production, APP_LOG_FORMAT=json, APP_LOG_LEVEL=INFO, logging to "
                "stdout redirected to a file; CPU time counts each server's worker processes",
            ],
        )
        self.rows: dict[str, Row] = {}

    # -- servers -------------------------------------------------------------------------------

    def _generated_env(
        self, project: Project, database: str | None, extra: dict[str, str]
    ) -> dict[str, str]:
        env = clean_env(
            APP_ENVIRONMENT="production",
            APP_SECRET_KEY=self.secret,
            APP_LOG_FORMAT="json",
            APP_LOG_LEVEL="INFO",
            APP_DOCS_ENABLED="true",
        )
        if database is not None:
            # Ignored by a render without a database (its settings ignore unknown variables).
            env["APP_DATABASE_URL"] = products.sqlite_url(
                project.example_setting("APP_DATABASE_URL"), self.workdir / f"{database}.sqlite3"
            )
        if project.answers.get("cache") == "redis":
            env["APP_REDIS_URL"] = self.redis_url
        env.update(extra)
        return env

    def generated(
        self, name: str, project: Project, database: str | None = None, **extra: str
    ) -> Server:
        return self._service(name, project, database, extra, [project.python, "-m", PACKAGE])

    def instrumented(
        self,
        name: str,
        project: Project,
        database: str | None = None,
        *,
        exclude_receive_send: bool,
        **extra: str,
    ) -> Server:
        """The generated service with FastAPIInstrumentor in place of its request-span middleware
        (bench/apps/official_tracing.py); `project` has the instrumentation installed."""
        command: list[str | Path] = [project.python, OFFICIAL_TRACING_APP]
        if exclude_receive_send:
            command.append("--exclude-receive-send")
        extra = {**extra, "PYTHONPATH": str(OFFICIAL_TRACING_APP.parent)}
        return self._service(name, project, database, extra, command)

    def _service(
        self,
        name: str,
        project: Project,
        database: str | None,
        extra: dict[str, str],
        command: list[str | Path],
    ) -> Server:
        env = self._generated_env(project, database, extra)
        if "APP_DATABASE_URL" in env and project.has_file("alembic.ini"):
            subprocess.run(
                [project.path / ".venv" / "bin" / "alembic", "upgrade", "head"],
                cwd=project.path,
                env=env,
                check=True,
                capture_output=True,
            )
        port = free_port()
        env.update(APP_HOST="127.0.0.1", APP_PORT=str(port), APP_WORKERS="1")
        return Server(
            name,
            command,
            cwd=project.path,
            env=env,
            log=self.workdir / f"{name}.log",
            port=port,
            cpu=self.server_cpu,
        )

    def reference(self, name: str, project: Project, target: str, **extra: str) -> Server:
        """A baseline app on the server of `project`'s render, with that render's interpreter."""
        port = free_port()
        server = project.answers.get("server", "granian")
        return Server(
            name,
            [project.python, SERVE, target, "--server", server, "--port", str(port)],
            cwd=project.path,
            env=clean_env(**extra),
            log=self.workdir / f"{name}.log",
            port=port,
            cpu=self.server_cpu,
        )

    def rounds(self, contenders: list[Contender]) -> dict[str, Runs]:
        runs = alternate(
            contenders,
            self.load,
            rounds=self.profile.rounds,
            seconds=self.profile.seconds,
            warmup_seconds=self.profile.warmup_seconds,
            pause_seconds=self.profile.pause_seconds,
        )
        for contender in contenders:
            log_lines = contender.server.log_lines()
            self.report.runs.append((runs[contender.name], f"{log_lines:,}"))
            if runs[contender.name].errors:
                self.report.notes.append(
                    f"{contender.name}: {runs[contender.name].errors} errors or non-2xx responses"
                )
        return runs

    def record(self, row: Row) -> None:
        self.rows[row.measure] = row
        if row.verdict == "FAIL":
            self.failed = True

    def record_ratio(self, measure: str, a: Runs, b: Runs, at_least: float | None = None) -> None:
        self.record(ratio_row(measure, Ratio.of_throughput(a, b), at_least=at_least))

    def record_p99(self, measure: str, a: Runs, b: Runs) -> None:
        self.record(p99_row(measure, Ratio.of_p99(a, b), a.p99_ms, b.p99_ms, at_most=TAIL_BUDGET))

    def record_failure(self, measures: list[str], error: Exception) -> None:
        failure = f"failed: {str(error).splitlines()[0]}"
        for measure in measures:
            if measure not in self.rows:
                self.record(Row(measure, failure, verdict="FAIL"))

    # -- measurements --------------------------------------------------------------------------

    def build(self, variant: str, *, suite: bool = True, **answers: str) -> Project:
        project = render(self.template, self.workdir, variant, answers)
        self.report.projects.append(project)
        if not suite:
            return project
        try:
            project.run_suite()
        except RuntimeError as error:
            self.report.notes.append(str(error).splitlines()[0])
            self.failed = True
        return project

    def build_more(self, variant: str, **answers: str) -> Project:
        """A render beside the default one; a smoke run skips its suite (the matrix runs it)."""
        return self.build(variant, suite=self.profile.name == FULL.name, **answers)

    def liveness(self, project: Project, uvicorn: Project) -> set[str]:
        """Each server's render against bare FastAPI on it, and on uvicorn (what a user writes by
        hand); returns the generated service's routes."""
        with ExitStack() as stack:
            generated = stack.enter_context(self.generated(GENERATED, project))
            on_uvicorn = stack.enter_context(self.generated(GENERATED_UVICORN, uvicorn))
            bare = stack.enter_context(self.reference(BARE, uvicorn, "bare:app"))
            bare_granian = stack.enter_context(self.reference(BARE_GRANIAN, project, "bare:app"))
            bare_router = stack.enter_context(
                self.reference(BARE_ROUTER, uvicorn, "bare:router_app")
            )
            seed = stack.enter_context(self.reference(SEED, uvicorn, "seed:app"))
            paths = products.routes(generated)
            runs = self.rounds(
                [
                    Contender(GENERATED, generated, LIVE),
                    Contender(GENERATED_UVICORN, on_uvicorn, LIVE),
                    Contender(BARE, bare, LIVE),
                    Contender(BARE_GRANIAN, bare_granian, LIVE),
                    Contender(BARE_ROUTER, bare_router, LIVE),
                    Contender(SEED, seed, LIVE),
                ]
            )
        generated_runs, bare_runs = runs[GENERATED], runs[BARE]
        self.record_ratio(GENERATED_VS_APP_ROUTE, generated_runs, bare_runs, LIVENESS_BUDGET)
        self.record(
            ratio_row(
                GENERATED_VS_APP_ROUTE_CPU, Ratio.of_cpu_efficiency(generated_runs, bare_runs)
            )
        )
        self.record(ratio_row(GENERATED_VS_APP_ROUTE_P99, Ratio.of_p99(generated_runs, bare_runs)))
        self.record_ratio(
            GRANIAN_VS_SAME_SERVER, generated_runs, runs[BARE_GRANIAN], SAME_SERVER_LIVENESS_BUDGET
        )
        self.record_ratio(
            UVICORN_VS_SAME_SERVER, runs[GENERATED_UVICORN], bare_runs, SAME_SERVER_LIVENESS_BUDGET
        )
        self.record_ratio(GRANIAN_VS_UVICORN_LIVE, generated_runs, runs[GENERATED_UVICORN])
        self.record_ratio(BARE_GRANIAN_VS_UVICORN, runs[BARE_GRANIAN], bare_runs)
        self.record_ratio(GENERATED_VS_BARE, runs[GENERATED_UVICORN], runs[BARE_ROUTER])
        self.record_ratio(ROUTER_VS_APP_ROUTE, runs[BARE_ROUTER], bare_runs)
        self.record_ratio(SEED_VS_BARE, runs[SEED], bare_runs)
        self.record_ratio(GENERATED_VS_SEED, generated_runs, runs[SEED])
        return paths

    def features(self, default: Project, uvicorn: Project, paths: set[str]) -> None:
        """Cached reads against liveness, and what tracing, error reporting and the rate limit
        cost."""
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            for measure in FEATURE_MEASURES:
                self.record(missing_row(measure, reason))
            return
        redis = None
        if _reachable(self.redis_url):
            redis = self.build_more("cache-redis", cache="redis")
        else:
            for measure in (
                REDIS_HIT_VS_LIVE,
                REDIS_VS_MEMORY,
                LIMITED_REDIS_VS_OFF,
                REDIS_VS_MEMORY_P99,
            ):
                self.record(missing_row(measure, f"Redis not reachable at {self.redis_url}"))
        traced = self.build_more("tracing", tracing="true")
        reporting = self.build_more("error-reporting", error_reporting="sentry")
        limited = self.build_more("rate-limit", rate_limit="true")
        try:
            with ExitStack() as stack, OtlpSink() as sink:
                tracing = {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": SPAN_BATCH_DELAY_MS,
                }
                every = {**tracing, "OTEL_TRACES_SAMPLER": "always_on"}
                tenth = {
                    **tracing,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.1",
                }
                unsampled = {**tracing, "OTEL_TRACES_SAMPLER": "always_off"}
                unexported = {**every, "OTEL_TRACES_EXPORTER": "none"}
                # The sink takes the SDK's envelopes too: a DSN that answers, as Sentry would.
                dsn = {"SENTRY_DSN": sink.endpoint.replace("http://", "http://public@") + "/1"}
                limit = {"APP_RATE_LIMIT": UNREACHED_RATE_LIMIT}
                # (liveness measured on it, or None; its cached read; render; database; env)
                servers: list[tuple[str | None, str, Project, str, dict[str, str]]] = [
                    (MEMORY_LIVE, MEMORY_HIT, default, "read-memory", {}),
                    (UVICORN_LIVE, UVICORN_HIT, uvicorn, "read-memory-uvicorn", {}),
                    (TRACED_LIVE, TRACED_HIT, traced, "read-traced", every),
                    (SAMPLED_LIVE, SAMPLED_HIT, traced, "read-sampled", tenth),
                    (UNSAMPLED_LIVE, UNSAMPLED_HIT, traced, "read-unsampled", unsampled),
                    (UNEXPORTED_LIVE, UNEXPORTED_HIT, traced, "read-unexported", unexported),
                    (REPORTING_LIVE, REPORTING_HIT, reporting, "read-reporting", dsn),
                    (None, LIMITED_HIT, limited, "read-limited", limit),
                ]
                if redis:
                    redis_limit = {**limit, "APP_REDIS_URL": self.redis_url}
                    servers += [
                        (REDIS_LIVE, REDIS_HIT, redis, "read-redis", {}),
                        (None, LIMITED_REDIS_HIT, limited, "read-limited-redis", redis_limit),
                    ]
                contenders = []
                for live_name, hit_name, project, database, env in servers:
                    server, path = self._cached_read(stack, hit_name, project, database, env)
                    if live_name:
                        contenders.append(Contender(live_name, server, LIVE))
                    contenders.append(Contender(hit_name, server, path))
                runs = self.rounds(contenders)
                if sink.exports == 0:
                    self.report.notes.append("tracing: no spans reached the stand-in collector")
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure(FEATURE_MEASURES, error)
            return
        off_live, off_hit = runs[MEMORY_LIVE], runs[MEMORY_HIT]
        self.record_ratio(MEMORY_HIT_VS_LIVE, off_hit, off_live, MEMORY_HIT_BUDGET)
        self.record_ratio(
            UVICORN_HIT_VS_LIVE, runs[UVICORN_HIT], runs[UVICORN_LIVE], MEMORY_HIT_BUDGET
        )
        self.record_ratio(GRANIAN_VS_UVICORN_HIT, off_hit, runs[UVICORN_HIT])
        self.record_ratio(TRACED_LIVE_VS_OFF, runs[TRACED_LIVE], off_live)
        self.record_ratio(TRACED_HIT_VS_OFF, runs[TRACED_HIT], off_hit)
        self.record_ratio(SAMPLED_LIVE_VS_OFF, runs[SAMPLED_LIVE], off_live, TRACING_SAMPLED_BUDGET)
        self.record_ratio(SAMPLED_HIT_VS_OFF, runs[SAMPLED_HIT], off_hit, TRACING_SAMPLED_BUDGET)
        self.record_ratio(UNSAMPLED_LIVE_VS_OFF, runs[UNSAMPLED_LIVE], off_live)
        self.record_ratio(UNSAMPLED_HIT_VS_OFF, runs[UNSAMPLED_HIT], off_hit)
        self.record_ratio(UNEXPORTED_LIVE_VS_OFF, runs[UNEXPORTED_LIVE], off_live)
        self.record_ratio(UNEXPORTED_HIT_VS_OFF, runs[UNEXPORTED_HIT], off_hit)
        self.record_ratio(
            REPORTING_LIVE_VS_OFF, runs[REPORTING_LIVE], off_live, ERROR_REPORTING_BUDGET
        )
        self.record_ratio(
            REPORTING_HIT_VS_OFF, runs[REPORTING_HIT], off_hit, ERROR_REPORTING_BUDGET
        )
        self.record_ratio(LIMITED_VS_OFF, runs[LIMITED_HIT], off_hit)
        if redis:
            self.record_ratio(
                REDIS_HIT_VS_LIVE, runs[REDIS_HIT], runs[REDIS_LIVE], REDIS_HIT_BUDGET
            )
            self.record_ratio(REDIS_VS_MEMORY, runs[REDIS_HIT], off_hit)
            self.record_p99(REDIS_VS_MEMORY_P99, runs[REDIS_HIT], off_hit)
            self.record_ratio(LIMITED_REDIS_VS_OFF, runs[LIMITED_REDIS_HIT], off_hit)

    def _cached_read(
        self, stack: ExitStack, name: str, project: Project, database: str, env: dict[str, str]
    ) -> tuple[Server, str]:
        """A server of `project` with one product read twice (its read now a cache hit)."""
        server = stack.enter_context(self.generated(name, project, database, **env))
        product_id = products.create_product(server)
        cache_header = products.warm_cache(server, product_id)
        if cache_header.upper() != "HIT":
            self.report.notes.append(f"{name}: second read answered X-Cache {cache_header!r}")
        return server, f"{products.COLLECTION}/{product_id}"

    def tails(self, default: Project, paths: set[str]) -> None:
        """The p99 rows, on servers of their own when their sections do not run."""
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            for measure in TAIL_MEASURES:
                self.record(missing_row(measure, reason))
            return
        if "features" not in self.sections:
            self._redis_tail(default)
        if "databases" not in self.sections:
            if _reachable(self.postgres_url, 5432):
                try:
                    self._postgres_routes(self.postgres_render(), writes=False)
                except (RuntimeError, subprocess.CalledProcessError) as error:
                    self.record_failure([POSTGRES_LIST_VS_RAW_P99, POSTGRES_VS_RAW_P99], error)
            else:
                for measure in (POSTGRES_LIST_VS_RAW_P99, POSTGRES_VS_RAW_P99):
                    reason = f"PostgreSQL not reachable at {self.postgres_url}"
                    self.record(missing_row(measure, reason))

    def _redis_tail(self, default: Project) -> None:
        if not _reachable(self.redis_url):
            reason = f"Redis not reachable at {self.redis_url}"
            self.record(missing_row(REDIS_VS_MEMORY_P99, reason))
            return
        redis = self.build_more("cache-redis", cache="redis")
        try:
            with ExitStack() as stack:
                contenders = [
                    Contender(name, *self._cached_read(stack, name, project, database, {}))
                    for name, project, database in (
                        (MEMORY_HIT, default, "read-memory"),
                        (REDIS_HIT, redis, "read-redis"),
                    )
                ]
                runs = self.rounds(contenders)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure([REDIS_VS_MEMORY_P99], error)
            return
        self.record_p99(REDIS_VS_MEMORY_P99, runs[REDIS_HIT], runs[MEMORY_HIT])

    def databases(self, paths: set[str]) -> None:
        """Uncached reads (SQLite, PostgreSQL), a list page and a create against raw drivers."""
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            for measure in DATABASE_MEASURES:
                self.record(missing_row(measure, reason))
            return
        sqlite = self.build_more("sqlite-no-cache", cache="none")
        try:
            self._sqlite_reads(sqlite)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure([SQLITE_VS_RAW], error)
        postgres_measures = [
            POSTGRES_VS_RAW,
            POSTGRES_LIST_VS_RAW,
            POSTGRES_CREATE_VS_RAW,
            POSTGRES_LIST_VS_RAW_P99,
            POSTGRES_VS_RAW_P99,
        ]
        if not _reachable(self.postgres_url, 5432):
            for measure in postgres_measures:
                self.record(
                    missing_row(measure, f"PostgreSQL not reachable at {self.postgres_url}")
                )
            return
        postgres = self.postgres_render()
        try:
            self._postgres_routes(postgres)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure(postgres_measures, error)

    def mysql(self, paths: set[str]) -> None:
        """The MySQL read, list page and create against raw asyncmy; raw aiomysql beside it."""
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            for measure in MYSQL_MEASURES:
                self.record(missing_row(measure, reason))
            return
        if not _reachable(self.mysql_url, 3306):
            for measure in MYSQL_MEASURES:
                self.record(missing_row(measure, f"MySQL not reachable at {self.mysql_url}"))
            return
        mysql = self.build_more("mysql-no-cache", database="mysql", cache="none")
        try:
            self._mysql_routes(mysql)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure(MYSQL_MEASURES, error)

    def _sqlite_reads(self, project: Project) -> None:
        databases = {name: self.workdir / f"{name}.sqlite3" for name in ("generated", "raw")}
        documented = project.example_setting("APP_DATABASE_URL")
        for database in databases.values():
            url = products.sqlite_url(documented, database)
            products.migrate(project, url)
            seed_products(project.path, PACKAGE, SEEDED_PRODUCTS, url)
        raw_url = f"sqlite:///{databases['raw']}"
        with ExitStack() as stack:
            generated = stack.enter_context(self.generated(SQLITE_READ, project, "generated"))
            raw = stack.enter_context(
                self.reference(RAW_SQLITE_READ, project, "raw_db:app", BENCH_DATABASE_URL=raw_url)
            )
            path = products.same_answer(generated, raw, f"{products.COLLECTION}/1")
            runs = self.rounds(
                [Contender(SQLITE_READ, generated, path), Contender(RAW_SQLITE_READ, raw, path)]
            )
        self.record_ratio(
            SQLITE_VS_RAW, runs[SQLITE_READ], runs[RAW_SQLITE_READ], SQLITE_READ_BUDGET
        )

    def _postgres_routes(self, project: Project, *, writes: bool = True) -> None:
        with ExitStack() as stack:
            urls = {
                name: self.seeded_postgres(stack, project, name) for name in ("generated", "raw")
            }
            generated = stack.enter_context(
                self.generated(
                    POSTGRES_READ,
                    project,
                    APP_DATABASE_URL=products.asyncpg_url(urls["generated"]),
                    OTEL_SDK_DISABLED="true",
                )
            )
            raw = stack.enter_context(
                self.reference(
                    RAW_POSTGRES_READ, project, "raw_db:app", BENCH_DATABASE_URL=urls["raw"]
                )
            )
            one = products.same_answer(generated, raw, f"{products.COLLECTION}/1")
            page = products.same_answer(generated, raw, f"{products.COLLECTION}?page=2&size=20")
            runs = self.rounds(
                [
                    Contender(POSTGRES_READ, generated, one),
                    Contender(RAW_POSTGRES_READ, raw, one),
                    Contender(POSTGRES_LIST, generated, page),
                    Contender(RAW_POSTGRES_LIST, raw, page),
                ]
            )
            self.record_ratio(
                POSTGRES_VS_RAW, runs[POSTGRES_READ], runs[RAW_POSTGRES_READ], POSTGRES_READ_BUDGET
            )
            self.record_ratio(POSTGRES_LIST_VS_RAW, runs[POSTGRES_LIST], runs[RAW_POSTGRES_LIST])
            self.record_p99(POSTGRES_VS_RAW_P99, runs[POSTGRES_READ], runs[RAW_POSTGRES_READ])
            self.record_p99(POSTGRES_LIST_VS_RAW_P99, runs[POSTGRES_LIST], runs[RAW_POSTGRES_LIST])
            if not writes:
                return
            if not self.load.can_run(POST_PRODUCTS_SCRIPT):
                self.record(missing_row(POSTGRES_CREATE_VS_RAW, "POSTs need wrk"))
                return
            # After the reads: every create grows the table that the list page counts.
            writes = self.rounds(
                [
                    Contender(
                        POSTGRES_CREATE, generated, products.COLLECTION, POST_PRODUCTS_SCRIPT
                    ),
                    Contender(RAW_POSTGRES_CREATE, raw, products.COLLECTION, POST_PRODUCTS_SCRIPT),
                ]
            )
            self.record_ratio(
                POSTGRES_CREATE_VS_RAW, writes[POSTGRES_CREATE], writes[RAW_POSTGRES_CREATE]
            )

    def _mysql_routes(self, project: Project) -> None:
        # The other driver, for its baseline only: the render itself runs on asyncmy.
        uv = shutil.which("uv") or "uv"
        install = [uv, "pip", "install", "--quiet", "--python", str(project.python), "aiomysql"]
        subprocess.run(install, check=True, capture_output=True, env=clean_env(), timeout=300)
        with ExitStack() as stack:
            urls = {
                name: stack.enter_context(
                    products.throwaway_database(project, self.mysql_url, name, "mysql+asyncmy")
                )
                for name in ("generated", "raw")
            }
            for url in urls.values():
                products.migrate(project, url)
                seed_products(project.path, PACKAGE, SEEDED_PRODUCTS, url)
            generated = stack.enter_context(
                self.generated(MYSQL_READ, project, APP_DATABASE_URL=urls["generated"])
            )
            raw = stack.enter_context(
                self.reference(
                    RAW_ASYNCMY_READ, project, "raw_db:app", BENCH_DATABASE_URL=urls["raw"]
                )
            )
            aiomysql_url = urls["raw"].replace("mysql+asyncmy://", "mysql+aiomysql://", 1)
            other_driver = stack.enter_context(
                self.reference(
                    RAW_AIOMYSQL_READ, project, "raw_db:app", BENCH_DATABASE_URL=aiomysql_url
                )
            )
            one = products.same_answer(generated, raw, f"{products.COLLECTION}/1")
            products.same_answer(generated, other_driver, one)
            page = products.same_answer(generated, raw, f"{products.COLLECTION}?page=2&size=20")
            runs = self.rounds(
                [
                    Contender(MYSQL_READ, generated, one),
                    Contender(RAW_ASYNCMY_READ, raw, one),
                    Contender(RAW_AIOMYSQL_READ, other_driver, one),
                    Contender(MYSQL_LIST, generated, page),
                    Contender(RAW_MYSQL_LIST, raw, page),
                ]
            )
            self.record_ratio(
                MYSQL_VS_RAW, runs[MYSQL_READ], runs[RAW_ASYNCMY_READ], MYSQL_READ_BUDGET
            )
            self.record_ratio(AIOMYSQL_VS_ASYNCMY, runs[RAW_AIOMYSQL_READ], runs[RAW_ASYNCMY_READ])
            self.record_ratio(MYSQL_LIST_VS_RAW, runs[MYSQL_LIST], runs[RAW_MYSQL_LIST])
            if not self.load.can_run(POST_PRODUCTS_SCRIPT):
                self.record(missing_row(MYSQL_CREATE_VS_RAW, "POSTs need wrk"))
                return
            writes = self.rounds(
                [
                    Contender(MYSQL_CREATE, generated, products.COLLECTION, POST_PRODUCTS_SCRIPT),
                    Contender(RAW_MYSQL_CREATE, raw, products.COLLECTION, POST_PRODUCTS_SCRIPT),
                ]
            )
            self.record_ratio(MYSQL_CREATE_VS_RAW, writes[MYSQL_CREATE], writes[RAW_MYSQL_CREATE])

    def export_memory(self, default: Project, paths: set[str]) -> None:
        # The budget is set at the full run's largest export; a smoke run's exports are too small.
        judged = max(FULL.export_rows) if self.profile.name == FULL.name else None
        target = f"< {EXPORT_BUDGET_BYTES // MIB} MB"
        if not products.has_export_route(paths):
            for rows in self.profile.export_rows:
                reason = f"{products.NOT_AVAILABLE} (no {products.EXPORT} in /openapi.json)"
                self.record(
                    missing_row(export_measure(rows), reason, target if rows == judged else "")
                )
            return
        database = self.workdir / "export.sqlite3"
        try:
            with self.generated("export", default, "export") as server:
                products.create_product(server)
            for rows in sorted(self.profile.export_rows):
                url = products.sqlite_url(default.example_setting("APP_DATABASE_URL"), database)
                seed_products(default.path, PACKAGE, rows, url)
                with self.generated(f"export {rows:,} rows", default, "export") as server:
                    measured = products.export_memory(server, rows)
                self.report.exports.append(measured)
                verdict = ""
                if rows == judged:
                    verdict = "pass" if measured.growth_bytes < EXPORT_BUDGET_BYTES else "MISS"
                self.record(
                    Row(
                        export_measure(rows),
                        f"{measured.growth_bytes / MIB:.1f} MB",
                        f"{measured.seconds:.1f} s, {rows / measured.seconds:,.0f} rows/s",
                        target if rows == judged else "",
                        verdict,
                    )
                )
        except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
            for rows in self.profile.export_rows:
                if export_measure(rows) not in self.rows:
                    failure = f"failed: {str(error).splitlines()[0]}"
                    self.record(Row(export_measure(rows), failure, verdict="FAIL"))

    def seeded_postgres(self, stack: ExitStack, project: Project, name: str) -> str:
        """The URL of a database of its own on the PostgreSQL server, migrated and seeded with
        SEEDED_PRODUCTS products, and dropped when `stack` closes."""
        url = stack.enter_context(products.throwaway_database(project, self.postgres_url, name))
        products.migrate(project, products.asyncpg_url(url))
        seed_products(project.path, PACKAGE, SEEDED_PRODUCTS, products.asyncpg_url(url))
        return url

    def postgres_render(self) -> Project:
        """The PostgreSQL render without a cache, made once: with tracing, which the untraced
        measures switch off (OTEL_SDK_DISABLED=true: no middleware, nothing instrumented)."""
        if self._postgres is None:
            self._postgres = self.build_more(
                "postgresql-no-cache", database="postgresql", cache="none", tracing="true"
            )
        return self._postgres

    def traced_database(self, paths: set[str]) -> None:
        """What tracing costs the uncached PostgreSQL read: the same render served with the SDK
        disabled, at a 0.1 sampling ratio, and with no request sampled."""
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            for measure in TRACED_DATABASE_MEASURES:
                self.record(missing_row(measure, reason))
            return
        if not _reachable(self.postgres_url, 5432):
            for measure in TRACED_DATABASE_MEASURES:
                self.record(
                    missing_row(measure, f"PostgreSQL not reachable at {self.postgres_url}")
                )
            return
        project = self.postgres_render()
        try:
            self._traced_postgres_read(project)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure(TRACED_DATABASE_MEASURES, error)

    def _traced_postgres_read(self, project: Project) -> None:
        with ExitStack() as stack, OtlpSink() as sink:
            url = self.seeded_postgres(stack, project, "traced")
            database = {"APP_DATABASE_URL": products.asyncpg_url(url)}
            tracing = {
                **database,
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": SPAN_BATCH_DELAY_MS,
            }
            envs = {
                TRACED_OFF_POSTGRES_READ: {**database, "OTEL_SDK_DISABLED": "true"},
                TRACED_SAMPLED_POSTGRES_READ: {
                    **tracing,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.1",
                },
                TRACED_UNSAMPLED_POSTGRES_READ: {**tracing, "OTEL_TRACES_SAMPLER": "always_off"},
            }
            contenders = []
            for name, env in envs.items():
                server = stack.enter_context(self.generated(name, project, **env))
                contenders.append(Contender(name, server, f"{products.COLLECTION}/1"))
            runs = self.rounds(contenders)
            if sink.exports == 0:
                self.report.notes.append("traced PostgreSQL read: no spans reached the collector")
        off = runs[TRACED_OFF_POSTGRES_READ]
        sampled = runs[TRACED_SAMPLED_POSTGRES_READ]
        self.record_ratio(SAMPLED_POSTGRES_VS_OFF, sampled, off, TRACING_SAMPLED_BUDGET)
        added = sampled.cpu_us_per_request - off.cpu_us_per_request
        cpu = ratio_row(SAMPLED_POSTGRES_CPU, Ratio.of_cpu_efficiency(sampled, off))
        self.record(replace(cpu, spread=f"{cpu.spread}; {added:+.0f} µs per request"))
        self.record_ratio(UNSAMPLED_POSTGRES_VS_OFF, runs[TRACED_UNSAMPLED_POSTGRES_READ], off)

    def official_tracing(self, paths: set[str]) -> None:
        """What tracing adds to a request's CPU time, with the generated request-span middleware
        and with OpenTelemetry's FastAPI instrumentation in its place (as is, and without its
        receive and send spans): liveness and the memory cache hit, then the uncached PostgreSQL
        read; at a 0.1 ratio and with every request sampled."""
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            for measure in OFFICIAL_TRACING_MEASURES:
                self.record(missing_row(measure, reason))
            return
        try:
            self._official_cached(self.instrumentable("official-tracing"))
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure(OFFICIAL_CACHED_MEASURES, error)
        if not _reachable(self.postgres_url, 5432):
            for measure in OFFICIAL_POSTGRES_MEASURES:
                self.record(
                    missing_row(measure, f"PostgreSQL not reachable at {self.postgres_url}")
                )
            return
        try:
            project = self.instrumentable(
                "official-tracing-postgresql", database="postgresql", cache="none"
            )
            self._official_postgres_read(project)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            self.record_failure(OFFICIAL_POSTGRES_MEASURES, error)

    def instrumentable(self, variant: str, **answers: str) -> Project:
        """A render with tracing, and the FastAPI instrumentation installed in its environment for
        the benchmark only (the service does not depend on it), of the release that matches the
        render's OpenTelemetry packages. A render of its own, so no other section's servers run
        beside it; its suite is not run (the features and traced-database renders run it)."""
        project = self.build(variant, suite=False, tracing="true", **answers)
        release = subprocess.run(
            [project.python, "-c", INSTRUMENTATION_RELEASE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        uv = shutil.which("uv") or "uv"
        requirement = f"opentelemetry-instrumentation-fastapi=={release}"
        install = [uv, "pip", "install", "--quiet", "--python", str(project.python), requirement]
        subprocess.run(install, check=True, capture_output=True, env=clean_env(), timeout=300)
        return project

    def _official_servers(
        self, stack: ExitStack, project: Project, database: str | None, env: dict[str, str]
    ) -> dict[tuple[str | None, str], Server]:
        """The render served with tracing off, then by each tracer at each sampler, keyed by
        (tracer, sampler); with a SQLite `database`, each server has a file of its own."""
        # The service finds installed instrumentations itself: the FastAPI one is left to
        # FastAPIInstrumentor.instrument_app, called by the official servers alone.
        env = {**env, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi"}
        servers: dict[tuple[str | None, str], Server] = {}
        setups: list[tuple[str | None, str]] = [(None, "")]
        setups += [(tracer, sampler) for sampler in SAMPLERS for tracer in TRACERS]
        for index, (tracer, sampler) in enumerate(setups):
            name = official_server_name(project.variant, tracer, sampler)
            own = f"{database}-{index}" if database else None
            if tracer is None:
                server = self.generated(name, project, own, **env, OTEL_SDK_DISABLED="true")
            elif tracer == OURS:
                server = self.generated(name, project, own, **env, **SAMPLERS[sampler])
            else:
                excluding = tracer == OFFICIAL_EXCLUDING
                server = self.instrumented(
                    name, project, own, exclude_receive_send=excluding, **env, **SAMPLERS[sampler]
                )
            servers[tracer, sampler] = stack.enter_context(server)
        return servers

    def _official_cached(self, project: Project) -> None:
        with ExitStack() as stack, OtlpSink() as sink:
            exporting = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": SPAN_BATCH_DELAY_MS,
            }
            servers = self._official_servers(stack, project, "official", exporting)
            contenders = []
            for (tracer, sampler), server in servers.items():
                product_id = products.create_product(server)
                cache_header = products.warm_cache(server, product_id)
                if cache_header.upper() != "HIT":
                    raise RuntimeError(
                        f"{server.name}: second read answered X-Cache {cache_header!r}"
                    )
                item = f"{products.COLLECTION}/{product_id}"
                for path, url in ((OFFICIAL_LIVE, LIVE), (OFFICIAL_HIT, item)):
                    contenders.append(
                        Contender(official_server_name(path, tracer, sampler), server, url)
                    )
            runs = self.rounds(contenders)
            if sink.exports == 0:
                self.report.notes.append("official tracing: no spans reached the collector")
        for path in (OFFICIAL_LIVE, OFFICIAL_HIT):
            self._record_official(path, runs)

    def _official_postgres_read(self, project: Project) -> None:
        with ExitStack() as stack, OtlpSink() as sink:
            url = self.seeded_postgres(stack, project, "official")
            env = {
                "APP_DATABASE_URL": products.asyncpg_url(url),
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": SPAN_BATCH_DELAY_MS,
            }
            servers = self._official_servers(stack, project, None, env)
            one = f"{products.COLLECTION}/1"
            contenders = [
                Contender(
                    official_server_name(OFFICIAL_POSTGRES_READ, tracer, sampler), server, one
                )
                for (tracer, sampler), server in servers.items()
            ]
            runs = self.rounds(contenders)
            if sink.exports == 0:
                self.report.notes.append("official tracing: no spans reached the collector")
        self._record_official(OFFICIAL_POSTGRES_READ, runs)

    def _record_official(self, path: str, runs: dict[str, Runs]) -> None:
        off = runs[official_server_name(path)]
        for sampler in SAMPLERS:
            added = {
                tracer: added_cpu_us(runs[official_server_name(path, tracer, sampler)], off)
                for tracer in TRACERS
            }
            ours, official, excluding = added[OURS], added[OFFICIAL], added[OFFICIAL_EXCLUDING]
            detail = (
                f"added µs per request: ours {ours:+.1f}, {OFFICIAL} {official:+.1f}, "
                f"with exclude_spans {excluding:+.1f} (off: {off.cpu_us_per_request:.0f} µs)"
            )
            goal = f"<= {OURS_VS_OFFICIAL_BUDGET:.2f}x"
            if official > 0:
                ratio = ours / official
                verdict = "pass" if ratio <= OURS_VS_OFFICIAL_BUDGET else "MISS"
                row = Row(ours_vs_official(path, sampler), f"{ratio:.2f}x", detail, goal, verdict)
            else:
                reason = "n/a: the instrumentation added no CPU time measured"
                row = missing_row(ours_vs_official(path, sampler), reason, goal)
            self.record(row)
            rule = f"<= {SWITCH_WITHIN:.2f}x: switch"
            switch = "switch" if excluding <= SWITCH_WITHIN * ours else "keep ours"
            result = f"{excluding / ours:.2f}x" if ours > 0 else "ours added none measured"
            self.record(Row(excluding_vs_ours(path, sampler), result, "", rule, switch))

    def run(self) -> None:
        default = self.build("default")
        self.report.setup.append(f"Versions in the render: {_versions(default)}")
        if "liveness" in self.sections or "features" in self.sections:
            uvicorn = self.build_more("uvicorn", server="uvicorn")
        if "liveness" in self.sections:
            paths = self.liveness(default, uvicorn)
        else:
            with self.generated(GENERATED, default) as server:
                paths = products.routes(server)
        if "features" in self.sections:
            self.features(default, uvicorn, paths)
        if "databases" in self.sections:
            self.databases(paths)
        if "mysql" in self.sections:
            self.mysql(paths)
        if "traced-database" in self.sections:
            self.traced_database(paths)
        if "tails" in self.sections:
            self.tails(default, paths)
        if "official-tracing" in self.sections:
            self.official_tracing(paths)
        if "export" in self.sections:
            self.export_memory(default, paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds of each measure: proves it runs"
    )
    parser.add_argument("--output", type=Path, help="folder for latest.md and latest.png")
    parser.add_argument("--template", type=Path, default=TEMPLATE_DIR, help="template to render")
    parser.add_argument("--rounds", type=int, help="override the profile's rounds")
    parser.add_argument("--seconds", type=float, help="override the profile's seconds per round")
    parser.add_argument(
        "--load-generator",
        choices=["auto", "python"],
        default="auto",
        help="auto: wrk when installed, else the python client; python: always the python client",
    )
    parser.add_argument("--keep", action="store_true", help="keep the renders and server logs")
    parser.add_argument(
        "--only",
        type=_sections,
        help=f"comma-separated sections to measure, of: {', '.join(SECTIONS)} (default: all "
        f"but {', '.join(ON_REQUEST)})",
    )
    args = parser.parse_args(argv)

    profile = SMOKE if args.smoke else FULL
    if args.rounds or args.seconds:
        profile = replace(
            profile,
            rounds=args.rounds or profile.rounds,
            seconds=args.seconds or profile.seconds,
        )
    output: Path = args.output or (RESULTS_DIR / "smoke" if args.smoke else RESULTS_DIR)
    output.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    with _workdir(args.keep) as workdir:
        bench = Bench(args, profile, workdir)
        try:
            bench.run()
        finally:
            wall = time.perf_counter() - started
            judged = profile.name == FULL.name
            bench.record(
                Row(
                    WALL_TIME,
                    f"{wall:.0f} s",
                    target=f"< {WALL_BUDGET_SECONDS // 60} min",
                    verdict=("pass" if wall < WALL_BUDGET_SECONDS else "MISS") if judged else "",
                )
            )
            report = bench.report
            skipped = {
                measure
                for section in SECTIONS
                if section not in bench.sections
                for measure in section_rows(section, profile)
            }
            report.budget = [
                bench.rows.get(m) or Row(m, "not measured", verdict="FAIL")
                for m in budget_rows(profile)
                # A row measured on the servers of another section is shown too.
                if m not in skipped or m in bench.rows
            ]
            report.setup.append(f"Load average at the end: {_load_average()}")
            if profile.name == SMOKE.name:
                report.notes.insert(0, "Smoke run: durations and row counts too small to judge.")
            report.notes.append(
                "Absolute figures move with the machine's other load; the ratios, measured back "
                "to back and alternated, are what the budget judges."
            )
            (output / "latest.md").write_text(report.markdown("latest.png"))
            report.plot(output / "latest.png")
            print(report.markdown("latest.png"))
            print(f"\nwritten: {output / 'latest.md'} and {output / 'latest.png'}")
    return 1 if bench.failed or any(row.verdict == "FAIL" for row in report.budget) else 0


def _sections(text: str) -> tuple[str, ...]:
    sections = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [section for section in sections if section not in SECTIONS]
    if unknown or not sections:
        raise argparse.ArgumentTypeError(f"not a section: {', '.join(unknown) or text!r}")
    return sections


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="bench-"))
        print(f"renders and logs kept in {path}", file=sys.stderr)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="bench-") as path:
            yield Path(path)


if __name__ == "__main__":
    sys.exit(main())
