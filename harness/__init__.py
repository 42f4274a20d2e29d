"""What the template's tests and its benchmark share: rendering, the environment of commands run
inside a render, free ports, and seeding a render's database."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

from pytest_copie.plugin import Copie

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
SEEDER = Path(__file__).resolve().parent / "seed.py"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for commands run inside a rendered project: no APP_* leaking in, and uv
    never downloads an interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("APP_")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(
    workdir: Path,
    answers: Mapping[str, object],
    *,
    template: Path = TEMPLATE_DIR,
    vcs_ref: str = "HEAD",
) -> Path:
    """Renders `template` at `vcs_ref` into a new folder under `workdir`, with every other
    answer at its default (pytest-copie, as copier itself runs it with `--trust --defaults`).

    With the working tree at HEAD, copier includes its uncommitted changes: tests render what
    is being developed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    settings = workdir / "copier-settings.yml"
    if not settings.exists():
        settings.write_text("{}\n")
    # Copie numbers its folders from 0 in each instance: one folder per call keeps them apart.
    copie = Copie(template, Path(tempfile.mkdtemp(dir=workdir, prefix="render-")), settings)
    result = copie.copy(extra_answers=dict(answers), vcs_ref=vcs_ref)
    if result.exit_code != 0 or result.project_dir is None:
        raise RuntimeError(f"copier failed to render {dict(answers)}: {result.exception!r}")
    return result.project_dir


def seed_products(project: Path, package: str, total: int, database_url: str) -> None:
    """Fills the render's products table up to `total` rows through its own model (so no schema
    is restated here): the API would take minutes for a million rows."""
    subprocess.run(
        [project / ".venv" / "bin" / "python", SEEDER, package, str(total)],
        cwd=project,
        env=clean_env(APP_DATABASE_URL=database_url),
        check=True,
        timeout=900,
    )


def database_url(
    server: str, database: str, *, scheme: str = "postgresql+asyncpg", address: str = ""
) -> str:
    """The URL of `database` on the PostgreSQL or MySQL `server` (a URL), with its credentials,
    under `scheme`, at `address` (`host:port`, a proxy's say) or else the server's own."""
    credentials, _, server_address = urlsplit(server).netloc.rpartition("@")
    at = f"{credentials}@" if credentials else ""
    return f"{scheme}://{at}{address or server_address}/{database}"


# Run with a render's own interpreter, whose environment has the PostgreSQL driver.
EXECUTE_SQL = """
import asyncio, sys
import asyncpg

async def main():
    connection = await asyncpg.connect(sys.argv[1])
    await connection.execute(sys.argv[2])
    await connection.close()

asyncio.run(main())
"""
# The same on MySQL or MariaDB, with a MySQL render's driver.
EXECUTE_MYSQL = """
import asyncio, sys
from urllib.parse import urlsplit
import asyncmy

async def main():
    server = urlsplit(sys.argv[1])
    connection = await asyncmy.connect(
        host=server.hostname, port=server.port or 3306, user=server.username,
        password=server.password or "", autocommit=True, connect_timeout=10,
    )
    async with connection.cursor() as cursor:
        await cursor.execute(sys.argv[2])
    connection.close()

asyncio.run(main())
"""


@contextmanager
def throwaway_database(project: Path, server: str, prefix: str = "faults") -> Iterator[str]:
    """A new database on the PostgreSQL or MySQL `server` (a URL), dropped afterwards; yields
    its name. `project` is a render for that server: its interpreter runs the statements."""
    name = f"{prefix}_{uuid4().hex}"
    python = project / ".venv" / "bin" / "python"
    mysql = server.startswith("mysql")
    script = EXECUTE_MYSQL if mysql else EXECUTE_SQL

    def execute(statement: str) -> None:
        subprocess.run(
            [python, "-c", script, server, statement],
            cwd=project,
            env=clean_env(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    if mysql:
        execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    else:
        execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        execute(f"DROP DATABASE `{name}`" if mysql else f'DROP DATABASE "{name}" WITH (FORCE)')
