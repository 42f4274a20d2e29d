"""`python -m bench [--smoke]`: render, install, measure side by side, write the results.

Renders the variants it needs from this template's working tree into a temporary folder,
installs each with uv, serves them with uvicorn pinned to one CPU while the load generator
runs on another, alternates the servers round by round, and writes a Markdown table of medians
and ratios (`bench/results/latest.md`) with a plot next to it.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from harness import free_port, seed_products

from . import products
from .load import LoadGenerator
from .project import PACKAGE, Project, clean_env, render
from .report import MIB, Report, Row, missing_row, ratio_row
from .rounds import Contender, Ratio, Runs, alternate
from .server import Server

BENCH_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = BENCH_DIR.parent
SERVE = BENCH_DIR / "apps" / "serve.py"
RESULTS_DIR = BENCH_DIR / "results"
EXPORT_BUDGET_BYTES = 50 * MIB
THROUGHPUT_BUDGET = 0.85
CACHE_SPEEDUP_BUDGET = 2.0
WALL_BUDGET_SECONDS = 600
# A database of its own on the shared Redis, so the benchmark never touches other users' keys.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"

GENERATED = "generated service (default render)"
BARE = "bare FastAPI"
BARE_ROUTER = "bare FastAPI, route in an APIRouter"
SEED = "seed BaseHTTPMiddleware"
MEMORY_HIT = "product read, memory cache hit"
NO_CACHE = "product read, no cache (cache=none)"
REDIS_HIT = "product read, Redis cache hit (cache=redis)"


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int
    seconds: float
    warmup_seconds: float
    connections: int
    export_rows: tuple[int, ...]


FULL = Profile("full", 5, 8, 2, 32, (10_000, 100_000, 1_000_000))
SMOKE = Profile("smoke", 2, 1, 0, 16, (200, 1_000, 5_000))


# The measures of the budget table.
# The budget's baseline has the generated route exactly: in an APIRouter, under the same prefix.
GENERATED_VS_BARE = "Generated service / bare FastAPI (same route, in an APIRouter), throughput"
GENERATED_VS_BARE_CPU = (
    "Generated service / bare FastAPI (same route, in an APIRouter), CPU time per request"
    " (bare / generated)"
)
GENERATED_VS_BARE_P99 = (
    "Generated service / bare FastAPI (same route, in an APIRouter), p99 latency"
)
GENERATED_VS_APP_ROUTE = "Generated service / bare FastAPI (route on the app itself), throughput"
ROUTER_VS_APP_ROUTE = "Bare FastAPI: route in an APIRouter / on the app itself, throughput"
SEED_VS_BARE = "Seed BaseHTTPMiddleware / bare FastAPI, throughput"
GENERATED_VS_SEED = "Generated service / seed BaseHTTPMiddleware, throughput"
CACHE_HIT_VS_NONE = "Product read, memory cache hit / no cache, throughput"
REDIS_VS_MEMORY = "Product read, Redis cache hit / memory cache hit, throughput"
WALL_TIME = "Whole benchmark wall time"


def budget_rows(profile: Profile) -> list[str]:
    """The measures that every run reports (a value, or why it has none), in table order."""
    return [
        GENERATED_VS_BARE,
        GENERATED_VS_BARE_CPU,
        GENERATED_VS_BARE_P99,
        GENERATED_VS_APP_ROUTE,
        ROUTER_VS_APP_ROUTE,
        SEED_VS_BARE,
        GENERATED_VS_SEED,
        CACHE_HIT_VS_NONE,
        REDIS_VS_MEMORY,
        *(export_measure(rows) for rows in profile.export_rows),
        WALL_TIME,
    ]


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
        "('fastapi', 'starlette', 'uvicorn', 'pydantic', 'uvloop', 'httptools')), sep=', ')"
    )
    result = subprocess.run(
        [project.python, "-c", script], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
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
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpu = cpus[0] if pinned else None
        self.load = LoadGenerator(
            profile.connections,
            cpus[1] if pinned else None,
            use_wrk=args.load_generator != "python",
        )
        self.secret = secrets.token_urlsafe(48)
        self.failed = False
        self.report = Report(
            title=f"Benchmark ({profile.name} run)",
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
                f"reversed every other round; results are medians, ratios are medians of each "
                f"round's back-to-back pair",
                "Every server: uvicorn, 1 worker, uvloop + httptools, no uvicorn access log; the "
                "generated service with APP_ENVIRONMENT=production, APP_LOG_FORMAT=json, "
                "APP_LOG_LEVEL=INFO, logging to stdout redirected to a file",
            ],
        )
        self.rows: dict[str, Row] = {}

    # -- servers -------------------------------------------------------------------------------

    def _generated_env(self, project: Project, database: str | None) -> dict[str, str]:
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
        return env

    def generated(self, name: str, project: Project, database: str | None = None) -> Server:
        env = self._generated_env(project, database)
        if database is not None and project.has_file("alembic.ini"):
            subprocess.run(
                [project.path / ".venv" / "bin" / "alembic", "upgrade", "head"],
                cwd=project.path,
                env=env,
                check=True,
                capture_output=True,
            )
        port = free_port()
        command = [project.python, SERVE, f"{PACKAGE}.main:create_app", "--factory"]
        return Server(
            name,
            [*command, "--port", str(port)],
            cwd=project.path,
            env=env,
            log=self.workdir / f"{name}.log",
            port=port,
            cpu=self.server_cpu,
        )

    def reference(self, name: str, project: Project, target: str) -> Server:
        port = free_port()
        return Server(
            name,
            [project.python, SERVE, target, "--port", str(port)],
            cwd=project.path,
            env=clean_env(),
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

    # -- measurements --------------------------------------------------------------------------

    def build(self, variant: str, **answers: str) -> Project:
        project = render(self.template, self.workdir, variant, answers)
        self.report.projects.append(project)
        try:
            project.run_suite()
        except RuntimeError as error:
            self.report.notes.append(str(error).splitlines()[0])
            self.failed = True
        return project

    def throughput(self, project: Project) -> set[str]:
        """Generated vs bare vs seed on /health/live; returns the generated service's routes."""
        with ExitStack() as stack:
            generated = stack.enter_context(self.generated(GENERATED, project))
            bare = stack.enter_context(self.reference(BARE, project, "bare:app"))
            bare_router = stack.enter_context(
                self.reference(BARE_ROUTER, project, "bare:router_app")
            )
            seed = stack.enter_context(self.reference(SEED, project, "seed:app"))
            paths = products.routes(generated)
            runs = self.rounds(
                [
                    Contender(GENERATED, generated, "/health/live"),
                    Contender(BARE, bare, "/health/live"),
                    Contender(BARE_ROUTER, bare_router, "/health/live"),
                    Contender(SEED, seed, "/health/live"),
                ]
            )
        generated, baseline = runs[GENERATED], runs[BARE_ROUTER]
        self.record(
            ratio_row(
                GENERATED_VS_BARE,
                Ratio.of_throughput(generated, baseline),
                at_least=THROUGHPUT_BUDGET,
            )
        )
        self.record(ratio_row(GENERATED_VS_BARE_CPU, Ratio.of_cpu_efficiency(generated, baseline)))
        self.record(ratio_row(GENERATED_VS_BARE_P99, Ratio.of_p99(generated, baseline)))
        self.record(ratio_row(GENERATED_VS_APP_ROUTE, Ratio.of_throughput(generated, runs[BARE])))
        self.record(ratio_row(ROUTER_VS_APP_ROUTE, Ratio.of_throughput(baseline, runs[BARE])))
        self.record(ratio_row(SEED_VS_BARE, Ratio.of_throughput(runs[SEED], runs[BARE])))
        self.record(ratio_row(GENERATED_VS_SEED, Ratio.of_throughput(runs[GENERATED], runs[SEED])))
        return paths

    def product_reads(self, default: Project, paths: set[str]) -> None:
        hit_measure, redis_measure = CACHE_HIT_VS_NONE, REDIS_VS_MEMORY
        if not products.has_item_route(paths):
            reason = f"{products.NOT_AVAILABLE} (no {products.COLLECTION}/{{id}} in /openapi.json)"
            self.record(missing_row(hit_measure, reason, f">= {CACHE_SPEEDUP_BUDGET:.2f}x"))
            self.record(missing_row(redis_measure, reason))
            return
        uncached = self.build("cache-none", cache="none")
        redis = None
        if _reachable(self.redis_url):
            redis = self.build("cache-redis", cache="redis")
        else:
            self.record(missing_row(redis_measure, f"Redis not reachable at {self.redis_url}"))
        try:
            with ExitStack() as stack:
                servers = [
                    (MEMORY_HIT, default, "read-memory", "HIT"),
                    (NO_CACHE, uncached, "read-uncached", ""),
                    *([(REDIS_HIT, redis, "read-redis", "HIT")] if redis else []),
                ]
                contenders = []
                for name, project, database, expected_cache in servers:
                    server = stack.enter_context(self.generated(name, project, database))
                    product_id = products.create_product(server)
                    cache_header = products.warm_cache(server, product_id)
                    if cache_header.upper() != expected_cache:
                        self.report.notes.append(
                            f"{name}: second read answered X-Cache {cache_header!r}, "
                            f"expected {expected_cache or 'none'!r}"
                        )
                    path = f"{products.COLLECTION}/{product_id}"
                    contenders.append(Contender(name, server, path))
                runs = self.rounds(contenders)
        except (RuntimeError, subprocess.CalledProcessError) as error:
            failure = f"failed: {str(error).splitlines()[0]}"
            self.record(Row(hit_measure, failure, verdict="FAIL"))
            if redis:
                self.record(Row(redis_measure, failure, verdict="FAIL"))
            return
        self.record(
            ratio_row(
                hit_measure,
                Ratio.of_throughput(runs[MEMORY_HIT], runs[NO_CACHE]),
                at_least=CACHE_SPEEDUP_BUDGET,
            )
        )
        if redis:
            self.record(
                ratio_row(redis_measure, Ratio.of_throughput(runs[REDIS_HIT], runs[MEMORY_HIT]))
            )

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

    def run(self) -> None:
        default = self.build("default")
        self.report.setup.append(f"Versions in the render: {_versions(default)}")
        paths = self.throughput(default)
        self.product_reads(default, paths)
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
    args = parser.parse_args(argv)

    profile = SMOKE if args.smoke else FULL
    if args.rounds or args.seconds:
        profile = Profile(
            profile.name,
            args.rounds or profile.rounds,
            args.seconds or profile.seconds,
            profile.warmup_seconds,
            profile.connections,
            profile.export_rows,
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
            report.budget = [
                bench.rows.get(m) or Row(m, "not measured", verdict="FAIL")
                for m in budget_rows(profile)
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
