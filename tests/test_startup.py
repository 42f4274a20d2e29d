"""Layer 4, start-up: a wrong database or Redis URL stops the service with one line that names
the variable (credentials masked) and a non-zero exit; a dependency that is merely down lets it
start degraded and recover. On both servers: the check runs before either one starts.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess, TcpProxy, Variant, clean_env
from variants import ERROR_REPORTING, FULL, MYSQL_REDIS, POSTGRES_MEMORY, RATE_LIMIT

from harness import database_url

SECRET = "s3cret-Pa55word"
EXIT_SECONDS = 30


def server_url(name: str) -> str:
    url = os.environ.get(name)
    if not url:
        pytest.skip(f"{name} is not set: the start-up checks need the real server")
    return url


def start_and_wait_for_exit(project: Path, package: str, **env: str) -> tuple[int, str]:
    """`python -m <package>` with `env`; its exit code and all it printed."""
    result = subprocess.run(
        [project / ".venv" / "bin" / "python", "-m", package],
        cwd=project,
        env=clean_env(APP_ENVIRONMENT="development", **env),
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


# Each database server: the variable naming it, the service's URL scheme, and one whose driver
# the service does not install.
DATABASE_SERVERS = {
    "postgresql": ("TEST_POSTGRES_URL", "postgresql+asyncpg", "postgresql+psycopg"),
    "mysql": ("TEST_MYSQL_URL", "mysql+asyncmy", "mysql+aiomysql"),
}


def wrong_database_urls(server: str, scheme: str, missing_driver: str) -> dict[str, str]:
    address = urlsplit(server)
    return {
        "unknown database": database_url(server, "no_such_database_here", scheme=scheme),
        "refused credentials": (
            f"{scheme}://no_such_role:{SECRET}@{address.hostname}:{address.port}/test"
        ),
        "unresolvable host": database_url(
            server, "test", scheme=scheme, address=f"no-such-host.invalid:{address.port}"
        ),
        "malformed URL": "postgres is over there",
        "driver not installed": database_url(server, "test", scheme=missing_driver),
    }


def wrong_redis_urls(server: str) -> dict[str, str]:
    address = urlsplit(server)
    return {
        # A password alone is accepted by a Redis that has none; a user it does not know is not.
        "refused credentials": f"redis://nobody:{SECRET}@{address.hostname}:{address.port}/0",
        "unresolvable host": "redis://no-such-host.invalid:6379/0",
        "malformed URL": "localhost:6379",
    }


def check_one_line_exits(
    project: Path, variant: Variant, variable: str, urls: dict[str, str], **env: str
) -> list[str]:
    report = []
    for case, url in urls.items():
        code, output = start_and_wait_for_exit(project, variant.package, **{variable: url}, **env)
        lines = output.strip().splitlines()
        report.append(f"{case}: exit {code}, {lines[-1] if lines else 'nothing printed'}")
        assert code != 0, (case, output)
        # The warnings of dependencies that are merely down may come first; then one line.
        [line] = [line for line in lines if "does not answer; starting without it" not in line]
        assert line.startswith(f"Cannot start: {variable}: "), (case, output)
        assert SECRET not in output, case
    return report


@pytest.mark.parametrize(
    "variant",
    [v.param() for v in (FULL, POSTGRES_MEMORY, MYSQL_REDIS)],
)
def test_a_wrong_database_url_stops_start_up_with_one_line(
    projects: Projects, variant: Variant
) -> None:
    variable, scheme, missing_driver = DATABASE_SERVERS[str(variant.answers["database"])]
    server = server_url(variable)
    project = projects.installed(variant)
    redis = {"APP_REDIS_URL": os.environ.get("TEST_REDIS_URL", "")}
    urls = wrong_database_urls(server, scheme, missing_driver)
    report = check_one_line_exits(project, variant, "APP_DATABASE_URL", urls, **redis)
    print(f"\n{variant.id} ({variant.answers.get('server', 'granian')}):", *report, sep="\n  ")


@pytest.mark.parametrize(
    "variant",
    [v.param() for v in (FULL, RATE_LIMIT)],
)
def test_a_wrong_redis_url_stops_start_up_with_one_line(
    projects: Projects, variant: Variant
) -> None:
    server = server_url("TEST_REDIS_URL")
    project = projects.installed(variant)
    database = {"APP_DATABASE_URL": database_url(server_url("TEST_POSTGRES_URL"), "test")}
    report = check_one_line_exits(
        project, variant, "APP_REDIS_URL", wrong_redis_urls(server), **database
    )
    print(f"\n{variant.id} ({variant.answers.get('server', 'granian')}):", *report, sep="\n  ")


@pytest.mark.xdist_group(ERROR_REPORTING.id)
def test_a_malformed_sentry_dsn_stops_start_up_with_one_line(projects: Projects) -> None:
    project = projects.installed(ERROR_REPORTING)
    dsns = {
        "no scheme": "sentry.example.com/1",
        "no project": f"https://{SECRET}@sentry.example.com",
    }
    report = check_one_line_exits(project, ERROR_REPORTING, "SENTRY_DSN", dsns)
    print(f"\n{ERROR_REPORTING.id}:", *report, sep="\n  ")


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_a_database_that_is_down_at_start_up_degrades_the_service_until_it_answers(
    projects: Projects, tmp_path: Path
) -> None:
    server = server_url("TEST_POSTGRES_URL")
    project = projects.installed(POSTGRES_MEMORY)
    address = urlsplit(server)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 5432))
    try:
        service = ServiceProcess(
            project,
            POSTGRES_MEMORY.package,
            tmp_path / "service.log",
            APP_DATABASE_URL=database_url(server, "test", address=f"127.0.0.1:{proxy.port}"),
            APP_DATABASE_MIGRATE_ON_START="false",
            APP_DATABASE_TIMEOUT_SECONDS="1",
        )
        with service:
            down = httpx.get(f"{service.url}/health/ready", timeout=10)
            proxy.start()
            deadline = time.monotonic() + 10
            while (up := httpx.get(f"{service.url}/health/ready", timeout=10)).status_code != 200:
                assert time.monotonic() < deadline, up.text
                time.sleep(0.2)
            recovered_after = time.monotonic() - deadline + 10
        output = service.output
    finally:
        proxy.close()
    warnings = [line for line in output.splitlines() if "does not answer" in line]
    print(
        f"\ndatabase down at start-up: started, ready {down.status_code} {down.json()['checks']}; "
        f"ready 200 {recovered_after:.1f}s after the database came up; the log said {warnings}"
    )
    assert down.status_code == 503
    assert down.json()["checks"]["database"] != "ok"
    assert len(warnings) == 1
    assert "Traceback" not in output
