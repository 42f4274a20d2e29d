"""The set-up the fault tests share: a rendered service started as a process, the servers it
depends on, and proxies in front of them that a test cuts or hangs.

Its fixtures reach every test module as a plugin (`pytest_plugins` in conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Projects
from support import RedisServer, ServiceProcess, TcpProxy, Variant
from variants import MYSQL_REDIS, POSTGRES_MEMORY

from harness import database_url, throwaway_database

PRODUCT = {"name": "Kettle", "price": "19.90", "category_id": 1, "sku": "KT-2048-001"}
# The keys of every error answer.
ENVELOPE = {"error", "detail", "request_id"}


def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database of the test's own: the render is shared with its variant's other tests."""
    return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"


def json_logging_service(
    projects: Projects, variant: Variant, tmp_path: Path, **env: str
) -> ServiceProcess:
    """The variant's render started as users run it, logging JSON lines to `service.log`."""
    return ServiceProcess(
        projects.installed(variant),
        variant.package,
        tmp_path / "service.log",
        APP_LOG_FORMAT="json",
        **env,
    )


def sqlite_service(
    projects: Projects, variant: Variant, tmp_path: Path, **env: str
) -> ServiceProcess:
    """The variant's render started on the SQLite database of `sqlite_url`, logging JSON."""
    return json_logging_service(
        projects, variant, tmp_path, APP_DATABASE_URL=sqlite_url(tmp_path), **env
    )


def postgres_service(projects: Projects, tmp_path: Path, url: str, **env: str) -> ServiceProcess:
    """The PostgreSQL render started on the database at `url`, logging JSON: development
    migrates a new database on start."""
    return json_logging_service(
        projects,
        POSTGRES_MEMORY,
        tmp_path,
        APP_ENVIRONMENT="development",
        APP_DATABASE_URL=url,
        **env,
    )


@pytest.fixture
def postgres_server() -> str:
    server = os.environ.get("TEST_POSTGRES_URL")
    if not server:
        pytest.skip("TEST_POSTGRES_URL is not set: the fault tests on PostgreSQL need it")
    return server


@dataclass(frozen=True)
class PostgresDatabase:
    """A database of the test's own, `name`, on the PostgreSQL `server` (a URL)."""

    server: str
    name: str

    def url(self, scheme: str = "postgresql+asyncpg") -> str:
        """Its URL for the service; with the scheme `postgresql`, for asyncpg itself."""
        return database_url(self.server, self.name, scheme=scheme)

    def url_through(self, proxy: TcpProxy) -> str:
        """Its URL for the service, reached through `proxy`."""
        return database_url(self.server, self.name, address=f"127.0.0.1:{proxy.port}")


@pytest.fixture
def postgres_database(projects: Projects, postgres_server: str) -> Iterator[PostgresDatabase]:
    """A new database on the PostgreSQL server for the test alone, dropped afterwards."""
    with throwaway_database(projects.installed(POSTGRES_MEMORY), postgres_server) as name:
        yield PostgresDatabase(postgres_server, name)


@pytest.fixture
def database_proxy(postgres_server: str) -> Iterator[TcpProxy]:
    address = urlsplit(postgres_server)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 5432))
    proxy.start()
    yield proxy
    proxy.close()


def mysql_service(projects: Projects, tmp_path: Path, url: str, **env: str) -> ServiceProcess:
    """The MySQL render started on the database at `url`, logging JSON, its cache in process:
    development migrates a new database on start."""
    return json_logging_service(
        projects,
        MYSQL_REDIS,
        tmp_path,
        APP_ENVIRONMENT="development",
        APP_DATABASE_URL=url,
        **env,
    )


@pytest.fixture
def mysql_server() -> str:
    server = os.environ.get("TEST_MYSQL_URL")
    if not server:
        pytest.skip("TEST_MYSQL_URL is not set: the fault tests on MySQL need it")
    return server


@dataclass(frozen=True)
class MysqlDatabase:
    """A database of the test's own, `name`, on the MySQL or MariaDB `server` (a URL)."""

    server: str
    name: str

    def url(self) -> str:
        return database_url(self.server, self.name, scheme="mysql+asyncmy")

    def url_through(self, proxy: TcpProxy) -> str:
        """Its URL for the service, reached through `proxy`."""
        address = f"127.0.0.1:{proxy.port}"
        return database_url(self.server, self.name, scheme="mysql+asyncmy", address=address)


@pytest.fixture
def mysql_database(projects: Projects, mysql_server: str) -> Iterator[MysqlDatabase]:
    """A new database on the MySQL server for the test alone, dropped afterwards."""
    with throwaway_database(projects.installed(MYSQL_REDIS), mysql_server) as name:
        yield MysqlDatabase(mysql_server, name)


@pytest.fixture
def mysql_proxy(mysql_server: str) -> Iterator[TcpProxy]:
    address = urlsplit(mysql_server)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 3306))
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", redis_server.port))
    proxy.start()
    yield proxy
    proxy.close()
