"""Shared pieces of the template's tests: variants, rendering, running commands in a project."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from harness import TEMPLATE_DIR, clean_env, free_port

# `${{ ... }}` is a CI expression (GitHub Actions), not Jinja left behind.
LEFTOVER_JINJA = re.compile(rb"(?<!\$)\{\{|\{%|\.jinja\b")


@functools.cache
def questions() -> dict[str, dict[str, Any]]:
    """The questions of copier.yml (its `_` settings left out), in the order they are asked."""
    config = yaml.safe_load((TEMPLATE_DIR / "copier.yml").read_text())
    return {name: spec for name, spec in config.items() if not name.startswith("_")}


def choices(spec: Mapping[str, Any]) -> list[object]:
    """The values a question accepts: its choices in declared order, or both booleans."""
    if spec.get("type") == "bool":
        return [False, True]
    declared = spec.get("choices") or []
    return list(declared.values()) if isinstance(declared, Mapping) else list(declared)


@dataclass(frozen=True)
class Variant:
    """One combination of answers, with a readable id for the test report."""

    id: str
    answers: Mapping[str, object] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return str(self.answers.get("package_name", "my_service"))

    @property
    def server_urls(self) -> list[str]:
        """The environment variables naming the real servers this variant's suite tests against."""
        names = []
        if self.answers.get("database") == "postgresql":
            names.append("TEST_POSTGRES_URL")
        if self.answers.get("database") == "mysql":
            names.append("TEST_MYSQL_URL")
        redis_users = (self.answers.get(q) for q in ("rate_limit", "jobs"))
        if self.answers.get("cache") == "redis" or any(v is True for v in redis_users):
            names.append("TEST_REDIS_URL")
        return names

    @property
    def python_version(self) -> str:
        """The lowest Python version the rendered project supports (its `requires-python`)."""
        return str(self.answers.get("python_version", questions()["python_version"]["default"]))

    def param(self) -> object:
        """A pytest parameter whose checks run on one xdist worker, sharing one render."""
        return pytest.param(self, id=self.id, marks=pytest.mark.xdist_group(self.id))


# A Python that this machine does not have may come from a Debian root (`.ci/python313`); the
# project's commands then run inside that root.
DEBIAN_ROOT_SCRIPT = TEMPLATE_DIR / ".ci" / "python313"
DEBIAN_ROOT_PYTHON = "3.13"


@dataclass(frozen=True)
class Interpreter:
    """The Python that a rendered project is installed with, and where its commands run.

    `root` is the folder of a Debian root built by `.ci/python313`: commands run inside it, with
    the project and the `shared` folders bind-mounted at their own paths.
    """

    python: str
    root: Path | None = None

    @property
    def where(self) -> str:
        return "here" if self.root is None else "in a Debian 13 root (chroot)"

    def run(
        self,
        command: Sequence[str | Path],
        cwd: Path,
        shared: Sequence[Path] = (),
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        if self.root is None:
            return run(command, cwd, timeout=timeout)
        inside = [DEBIAN_ROOT_SCRIPT, "run", cwd, *shared, "--", *command]
        return run(inside, cwd, timeout=timeout, TEST_PYTHON313_ROOT=str(self.root))


@functools.cache
def interpreter_for(floor: str) -> Interpreter | None:
    """An interpreter for a project's Python floor: this one, any uv finds here, or a Debian root's.

    uv never downloads one (`UV_PYTHON_DOWNLOADS=never`). The Debian root serves the floor of its
    own version only: a project is tested on its floor wherever it can be. None when none is here.
    """
    if sys.version_info[:2] >= tuple(int(part) for part in floor.split(".")):
        return Interpreter(sys.executable)
    for request in (floor, f">={floor}"):  # the floor itself where it is here
        found = subprocess.run(
            ["uv", "python", "find", request],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if found.returncode == 0 and found.stdout.strip():
            return Interpreter(found.stdout.strip())
    if floor == DEBIAN_ROOT_PYTHON:
        return debian_root_interpreter()
    return None


def debian_root_interpreter() -> Interpreter | None:
    """Debian 13's Python 3.13 in the root `.ci/python313 build` made, if it is usable here.

    `.ci/run` builds it and sets `TEST_PYTHON313_ROOT`: then an unusable root fails the run.
    """
    status = subprocess.run(
        [DEBIAN_ROOT_SCRIPT, "status"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if status.returncode == 0:
        return Interpreter(f"/usr/bin/python{DEBIAN_ROOT_PYTHON}", Path(status.stdout.strip()))
    if os.environ.get("TEST_PYTHON313_ROOT"):
        pytest.fail(f"TEST_PYTHON313_ROOT is set, but {status.stdout.strip()}", pytrace=False)
    return None


def missing_interpreter_reason(floor: str) -> str:
    """Why a project of this floor gets no suite here, and where its suite runs instead."""
    if floor == DEBIAN_ROOT_PYTHON:
        reason = f"no Python {floor} here, and no Debian 13 root (`.ci/python313 build` makes one)"
    else:
        reason = (
            f"no Python {floor} or newer on this machine, and uv may not download one (the "
            f"Debian 13 root serves the projects whose floor is {DEBIAN_ROOT_PYTHON} only)"
        )
    return f"{reason}; the template's CI runs this suite on Python {floor}"


def run(
    command: Sequence[str | Path], cwd: Path, *, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command and fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(map(str, command))}` exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-8000:]}\n--- stderr ---\n{result.stderr[-8000:]}",
            pytrace=False,
        )
    return result


def run_static_checks(project: Path) -> None:
    """The checks a generated project runs on itself, in its installed environment."""
    for check in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "--strict", "src", "tests"],
        ["deptry", "src"],
    ):
        run(["uv", "run", "--no-sync", *check], project)


def project_files(project: Path) -> list[Path]:
    """Every file copier wrote (not git's, not the installed environment's)."""
    skip = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}
    return sorted(
        path
        for path in project.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(project).parts)
    )


class ServiceProcess:
    """A rendered service run as users run it, `python -m <package>`, on a free port.

    Its output goes to `log` (a pipe nobody reads would block a chatty service).
    """

    def __init__(self, project: Path, package: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [project / ".venv" / "bin" / "python", "-m", package],
                cwd=project,
                env=clean_env(APP_PORT=str(self.port), PYTHONUNBUFFERED="1", **env),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_until_live(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"service exited {self.process.returncode}:\n{self.output}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"service did not answer /health/live in {seconds}s:\n{self.output}")

    def stop(self, seconds: float = 30) -> str:
        """SIGTERM, wait for the exit, and return everything the service printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=seconds)
        return self.output

    def peak_rss_kib(self) -> int:
        return _proc_status_kib(self.process.pid, "VmHWM")

    def rss_kib(self) -> int:
        return _proc_status_kib(self.process.pid, "VmRSS")

    def __enter__(self) -> ServiceProcess:
        self.wait_until_live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


class TcpProxy:
    """Forwards a local port to a server, on an event loop in a thread of its own.

    `stop()` closes the port and cuts every connection through it, as a database going down or
    a network partition that resets connections does; `start()` opens the same port again.
    `hang()` keeps every connection open and accepts new ones but forwards nothing, in either
    direction, as a server that stops answering or a partition that drops packets does: what is
    sent meanwhile is lost, and a connection that lost bytes is reset once `resume()` lets new
    connections through again.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._flowing = self._call_result(self._new_event())

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def hang(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        self.resume()
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def _call_result(self, coroutine: Coroutine[Any, Any, asyncio.Event]) -> asyncio.Event:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _new_event(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._connections:
            writer.transport.abort()
        self._connections.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        await self._flowing.wait()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._connections.discard(writer)
            return
        pair = {writer, upstream_writer}
        self._connections |= pair
        await asyncio.gather(
            self._pipe(reader, upstream_writer, pair),
            self._pipe(upstream_reader, writer, pair),
            return_exceptions=True,
        )
        self._connections -= pair

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: set[asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not self._flowing.is_set():
                    # Dropped: a stream with a gap cannot go on, it is reset after the hang.
                    await self._flowing.wait()
                    for end in pair:
                        end.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


class RedisServer:
    """A throw-away redis-server on a free port, which a test can kill and bring back."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: the Redis outage test needs one")
        self.command = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.command, "--port", str(self.port)], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class QuietHandler(BaseHTTPRequestHandler):
    """A stand-in peer's handler: no line per request, and an answer the service may have left."""

    def answer(self, body: bytes = b"", content_type: str | None = None) -> None:
        try:
            self.send_response(200)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service stopped waiting, as a hung peer makes it

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HoldingServer(ThreadingHTTPServer):
    """A loopback HTTP server that a rendered service sends to (spans, error reports).

    With `hold`, its handler answers nothing until `released`, as a peer that hangs does.
    """

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, hold: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.hold = hold
        self.released = threading.Event()
        self.lock = threading.Lock()


Held = TypeVar("Held", bound=HoldingServer)


def serving(server: Held) -> Iterator[Held]:
    """`server` answering from a thread of its own until the generator ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


def json_lines(output: str) -> list[dict[str, Any]]:
    """The JSON log lines of a service's output."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def logged_at(lines: list[dict[str, Any]], event: str) -> float:
    """When the service logged `event`, in seconds since the epoch."""
    [line] = [line for line in lines if line["event"] == event]
    return datetime.fromisoformat(line["timestamp"]).timestamp()


def timed_liveness_reads(url: str, count: int) -> list[float]:
    """Milliseconds of each of `count` liveness reads, one after another; all must answer 200."""
    durations = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.get("/health/live").status_code == 200
            durations.append((time.perf_counter() - started) * 1000)
    return durations
