"""A generated README's "Run it", run as written: its `sh` blocks, in order, in a fresh clone of
the rendered service, up to requests that must succeed, against the machine's PostgreSQL and Redis
where the render uses them.

The README's convention: a command whose comment says that it `serves ... on
http://127.0.0.1:<port>` keeps running, as a person leaves it running in a terminal of its own;
the test starts that block in the background, waits until the port answers and goes on. Every
other block must exit 0 (its requests use `curl --fail`). The test changes only the ports (the
service reads `APP_PORT` and `APP_JOBS_WORKER_PORT`; the URLs follow), and renders each service
under a name of its own, so that the database the README creates, the cache keys and the job
queue are this test's alone.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from uuid import uuid4

import pytest
from support import clean_env, free_port, run

from harness import render

FULL = {
    "database": "postgresql",
    "cache": "redis",
    "jobs": True,
    "rate_limit": True,
    "tracing": True,
    "metrics": True,
    "auth": "jwt",
}
# Its own local identity provider, from "Run it" to an authorised write.
OIDC = {"database": "sqlite", "auth": "oidc"}
SERVES = re.compile(r"#.*\bserves\b.*\bhttp://127\.0\.0\.1:(\d+)")
# The addresses that the README of a PostgreSQL and Redis render names.
LOCAL_SERVERS = {
    "TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/",
    "TEST_REDIS_URL": "redis://127.0.0.1:6379/",
}


def run_it_blocks(readme: str) -> list[str]:
    """The `sh` blocks of the "Run it" section, in order."""
    section = readme.split("\n## Run it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def fresh_clone(project: Path, clone: Path) -> Path:
    """The rendered service as a teammate gets it: committed, then cloned (no `.env`, no
    environment installed)."""
    if not (project / ".git").exists():
        run(["git", "init", "--quiet"], project)
    run(["git", "add", "--all"], project)
    run(["git", "commit", "--quiet", "--allow-empty", "-m", "Generated"], project)
    run(["git", "clone", "--quiet", project, clone], project.parent)
    assert not (clone / ".env").exists()
    return clone


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"a long-running block exited {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing answered on port {port} in {seconds} s:\n{log.read_text()}")


@contextmanager
def in_background(
    block: str, clone: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as output:
        process = subprocess.Popen(
            ["bash", "-e", "-c", block],
            cwd=clone,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: bash, uv and the service
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            # What the README's Ctrl-C does: the whole group hears it (and `uv run` passes it on).
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            pytest.fail(f"still running 60 s after Ctrl-C:\n{block}\n{log.read_text()}")


def run_readme(clone: Path, tmp_path: Path) -> list[str]:
    """Runs the blocks; returns each one's output, in order."""
    # The service, the jobs worker, and the local identity provider of an OIDC render.
    ports = {"8000": str(free_port()), "8001": str(free_port()), "8900": str(free_port())}
    env = clean_env(
        APP_PORT=ports["8000"], APP_JOBS_WORKER_PORT=ports["8001"], PYTHONUNBUFFERED="1"
    )
    blocks = run_it_blocks((clone / "README.md").read_text())
    assert blocks, "the README's Run it has no sh block"
    assert "curl --fail" in blocks[-1], "Run it must end with a request"
    outputs: list[str] = []
    with ExitStack() as services:
        running: list[tuple[subprocess.Popen[bytes], Path]] = []
        for number, block in enumerate(blocks):
            for readme_port, port in ports.items():
                block = block.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}")
            if serves := SERVES.search(block):
                log = tmp_path / f"block-{number}.log"
                process = services.enter_context(in_background(block, clone, env, log))
                running.append((process, log))
                wait_for_port(int(serves[1]), process, log, seconds=180)
                outputs.append(f"(running: {block.strip()})")
                continue
            done = subprocess.run(
                ["bash", "-e", "-c", block],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            served = "\n".join(log.read_text() for _, log in running)
            assert done.returncode == 0, (
                f"block {number} failed:\n{block}\n{done.stdout}\n{done.stderr}\n{served}"
            )
            outputs.append(done.stdout)
        for process, log in running:
            assert process.poll() is None, f"a service stopped early:\n{log.read_text()}"
    return outputs


def forget_redis_keys(project: Path, names: list[str]) -> None:
    """Deletes the keys that carry this render's names (its cache, counts and job queue)."""
    script = (
        "import sys, redis\n"
        "for db in (0, 1):\n"
        "    client = redis.Redis.from_url(f'redis://127.0.0.1:6379/{db}')\n"
        "    for name in sys.argv[1:]:\n"
        "        for key in client.scan_iter(f'*{name}*'):\n"
        "            client.delete(key)\n"
    )
    subprocess.run(
        [project / ".venv" / "bin" / "python", "-c", script, *names],
        cwd=project,
        env=clean_env(),
        check=True,
        timeout=60,
    )


@pytest.mark.parametrize("answers", [{}, FULL, OIDC], ids=["default", "full", "oidc"])
def test_readme_run_it_serves_a_fresh_clone_as_written(
    tmp_path: Path, answers: dict[str, object]
) -> None:
    needs_servers = answers.get("database") == "postgresql" or answers.get("cache") == "redis"
    if needs_servers:
        for variable, address in LOCAL_SERVERS.items():
            if not os.environ.get(variable, "").startswith(address):
                pytest.skip(f"the README names the server at {address}; {variable} is not it")
    name = f"run-it-{uuid4().hex[:8]}"
    package = name.replace("-", "_")
    started = time.monotonic()
    project = render(tmp_path / "renders", {"project_name": name, **answers})
    clone = fresh_clone(project, tmp_path / "clone")
    try:
        outputs = run_readme(clone, tmp_path)
    finally:
        if answers.get("database") == "postgresql":
            drop = ["dropdb", "--if-exists", "--force", "-h", "127.0.0.1", "-U", "postgres"]
            subprocess.run([*drop, package], check=False, timeout=60)
        if needs_servers and (clone / ".venv").exists():
            forget_redis_keys(clone, [package, name])
    took = time.monotonic() - started
    assert '"status":"healthy"' in "".join(outputs).replace(" ", "")
    if answers.get("jobs"):
        # It ends with an authorised CSV import, run by the worker.
        assert '"status":"succeeded"' in outputs[-1], outputs[-1]
        assert '"created":1' in outputs[-1], outputs[-1]
    print(f"\nRun it ({len(outputs)} blocks): render to last answer of {name} in {took:.0f} s")
