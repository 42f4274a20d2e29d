"""A Docker engine for the container tests: its client, base images, BuildKit builds, containers.

Builds and containers use the host's network: the rendered service reaches the test servers on
the loopback as the other tests' services do, and the engine needs no bridge or firewall rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

# From 23.0 the client builds with BuildKit only through its buildx plugin; older clients carry
# their own BuildKit session (DOCKER_BUILDKIT=1).
BUILDX_FROM_CLIENT_MAJOR = 23
STAND_IN_LABEL = "org.copier-fastapi-service.stand-in"
# The Debian release whose python3 is the version the official `python:<version>-slim` carries.
DEBIAN_SUITE_FOR_PYTHON = {"3.11": "bookworm"}
STAND_IN_PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
# Left out as Debian's slim images leave them out: package caches, documentation, translations.
TRIMMED = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's, read by pip and (SSL_CERT_FILE) uv


@dataclass(frozen=True)
class Docker:
    """A client that builds with BuildKit, and the engine that answers it."""

    client: str
    server_version: str

    def run(
        self, *args: str | Path, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [self.client, *map(str, args)]
        result = subprocess.run(
            command,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-8000:]}\n--- stderr ---\n{result.stderr[-8000:]}",
                pytrace=False,
            )
        return result

    def image_size(self, reference: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", reference).stdout)

    def has_image(self, reference: str) -> bool:
        return self.run("image", "inspect", reference, check=False).returncode == 0

    def build_cache(self) -> dict[str, str] | None:
        """The engine's build cache records, id to type; None when the engine cannot list them."""
        listed = self.run(
            "system", "df", "--verbose", "--format", "{{json .BuildCache}}", check=False
        )
        if listed.returncode != 0:
            return None
        return {record["ID"]: record["CacheType"] for record in json.loads(listed.stdout) or []}

    def prune_build_cache(self, ids: Collection[str]) -> str | None:
        """Drop these records (and those built on them) from the build cache, nothing else.

        Returns the engine's complaint when it refused.
        """
        if not ids:
            return None
        pattern = f"^({'|'.join(sorted(ids))})$"  # the engine matches `id` as a regex
        pruned = self.run(
            "builder", "prune", "--force", "--all", "--filter", f"id={pattern}", check=False
        )
        return pruned.stderr.strip() if pruned.returncode else None


def find_docker() -> Docker | str:
    """The first `docker` on PATH whose engine answers and that can build with BuildKit.

    Returns the reason when there is none.
    """
    reasons = []
    for client in docker_clients():
        probe = subprocess.run(
            [client, "version", "--format", "{{.Server.Version}} {{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            reasons.append(f"no engine answers `{client} version` ({probe.stderr.strip()})")
            continue
        server, client_version = probe.stdout.split()
        if int(client_version.split(".")[0]) >= BUILDX_FROM_CLIENT_MAJOR:
            buildx = [client, "buildx", "version"]
            if subprocess.run(buildx, capture_output=True, timeout=30, check=False).returncode:
                reasons.append(f"{client} (client {client_version}) lacks buildx for BuildKit")
                continue
        return Docker(client, server)
    return "; ".join(reasons) or "no `docker` client on PATH"


def docker_clients() -> list[str]:
    found: dict[str, str] = {}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder, "docker")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.setdefault(str(candidate.resolve()), str(candidate))
    return list(found.values())


def ci_is_set() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def base_images(dockerfile: str) -> list[str]:
    """The images the Dockerfile's stages start from (not its own stages), ARG defaults applied."""
    arguments = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    stages: set[str] = set()
    images: list[str] = []
    for image, stage in re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.MULTILINE):
        resolved = re.sub(r"\$\{(\w+)\}", lambda match: arguments[match[1]], image)
        if resolved not in stages and resolved not in images:
            images.append(resolved)
        stages.add(stage)
    return images


def provide_base_image(docker: Docker, reference: str, workdir: Path) -> str:
    """Make `reference` available to builds; say what it is (official or a stand-in) and how.

    An image already present is used as it is; else it is pulled; where no registry answers, a
    stand-in is built from Debian packages (`stand_in_image`).
    """
    started = time.monotonic()
    how = "present"
    if not docker.has_image(reference):
        pulled = docker.run("pull", reference, check=False, timeout=900)
        if pulled.returncode == 0:
            how = f"pulled in {time.monotonic() - started:.0f} s"
        else:
            stand_in_image(docker, reference, workdir, pulled.stderr.strip())
            how = f"built in {time.monotonic() - started:.0f} s"
    labels = docker.run("image", "inspect", "--format", "{{json .Config.Labels}}", reference)
    kind = "stand-in" if STAND_IN_LABEL in (json.loads(labels.stdout) or {}) else "official"
    return f"{kind}, {how}"


def stand_in_image(docker: Docker, reference: str, workdir: Path, pull_error: str) -> None:
    """`python:<version>-slim` rebuilt from Debian's packages, for an engine with no registry.

    It stands in for the official image only because the registry cannot be reached: a minimal
    Debian (debootstrap) whose python3 is that version, with pip and venv, `python` on PATH, the
    EXTERNALLY-MANAGED marker removed (the official image has none, and the Dockerfile installs
    uv with pip), and this machine's CA bundle, so that pip and uv reach the package index from
    inside a build as they do from here.
    """
    match = re.fullmatch(r"python:(\d+\.\d+)-slim", reference)
    suite = DEBIAN_SUITE_FOR_PYTHON.get(match[1]) if match else None
    debootstrap = shutil.which("debootstrap")
    if suite is None or debootstrap is None:
        pytest.fail(
            f"`docker pull {reference}` failed ({pull_error}), and no stand-in can be built: "
            + ("debootstrap is not installed" if suite else f"no Debian release has {reference}"),
            pytrace=False,
        )
    root = workdir / f"rootfs-{suite}"
    try:
        command = [debootstrap, "--variant=minbase", f"--include={STAND_IN_PACKAGES}", suite, root]
        result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
        if result.returncode != 0:
            pytest.fail(f"debootstrap {suite} failed:\n{result.stdout[-4000:]}", pytrace=False)
        for path in (entry for folder in TRIMMED for entry in (root / folder).glob("*")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for marker in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        ours = ssl.get_default_verify_paths().cafile
        if ours:
            shutil.copyfile(ours, root / CA_BUNDLE.lstrip("/"))
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8",
            f"ENV SSL_CERT_FILE={CA_BUNDLE} PIP_CERT={CA_BUNDLE}",
            f'LABEL {STAND_IN_LABEL}="{reference} from Debian {suite}, no registry reached"',
            'CMD ["python3"]',
        ]
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        options = [arg for change in changes for arg in ("--change", change)]
        imported = subprocess.run(
            [docker.client, "import", *options, "-", reference],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tar.wait(timeout=60)
        if imported.returncode != 0 or tar.returncode != 0:
            pytest.fail(f"docker import of the stand-in failed: {imported.stderr}", pytrace=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Build:
    """One `docker build`: the image, its wall time and the steps BuildKit took from its cache."""

    image_id: str
    seconds: float
    steps: dict[str, bool]  # "[stage n/m] INSTRUCTION ...": cached

    def cached(self, fragment: str) -> bool:
        [cached] = [hit for step, hit in self.steps.items() if fragment in step]
        return cached

    def cached_count(self) -> str:
        return f"{sum(self.steps.values())}/{len(self.steps)}"


def build_image(docker: Docker, context: Path, tag: str, *, no_cache: bool = False) -> Build:
    options = ["--network", "host", "--progress", "plain", "--tag", tag]
    started = time.monotonic()
    result = docker.run("build", *options, *(["--no-cache"] if no_cache else []), context)
    seconds = time.monotonic() - started
    # BuildKit's plain progress goes to stderr: "#7 [builder 2/8] RUN ..." then "#7 CACHED".
    names = dict(re.findall(r"^#(\d+) (\[(?!internal\]).+)$", result.stderr, re.MULTILINE))
    hits = set(re.findall(r"^#(\d+) CACHED$", result.stderr, re.MULTILINE))
    steps = {name: number in hits for number, name in names.items() if "] FROM " not in name}
    image_id = docker.run("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    return Build(image_id, seconds, steps)


@dataclass(frozen=True)
class RunSpec:
    """How a deployment file runs the image: `docker run` options, environment, command."""

    options: tuple[str, ...]
    environment: dict[str, str]
    command: tuple[str, ...] = ()
    stop_timeout: int = 10  # seconds between SIGTERM and SIGKILL

    def arguments(self) -> list[str]:
        variables = [
            arg for name, value in self.environment.items() for arg in ("-e", f"{name}={value}")
        ]
        return [*self.options, *variables]


@dataclass
class Container:
    """A detached container on the host's network; removed, with its output kept, on exit."""

    docker: Docker
    image: str
    spec: RunSpec
    name: str
    health_interval: str = "500ms"
    started_at: float = field(default=0.0, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.environment['APP_PORT']}"

    def __enter__(self) -> Container:
        run = ["run", "--detach", "--name", self.name, "--network", "host"]
        health = ["--health-interval", self.health_interval]
        self.started_at = time.monotonic()
        self.docker.run(*run, *health, *self.spec.arguments(), self.image, *self.spec.command)
        return self

    def __exit__(self, *exc: object) -> None:
        self.docker.run("rm", "--force", self.name, check=False)

    def state(self) -> dict[str, object]:
        inspected = self.docker.run("inspect", "--format", "{{json .State}}", self.name)
        state: dict[str, object] = json.loads(inspected.stdout)
        return state

    def logs(self) -> str:
        result = self.docker.run("logs", self.name)
        return result.stdout + result.stderr

    def wait_until_healthy(self, seconds: float = 90) -> float:
        """Seconds from `docker run` until Docker's own HEALTHCHECK reports `healthy`."""
        deadline = self.started_at + seconds
        while time.monotonic() < deadline:
            state = self.state()
            health = state.get("Health") or {}
            status = health.get("Status") if isinstance(health, dict) else None
            if status == "healthy":
                return time.monotonic() - self.started_at
            if state.get("Status") != "running" or status == "unhealthy":
                pytest.fail(f"container {status or state.get('Status')}:\n{self.logs()}")
            time.sleep(0.1)
        pytest.fail(f"container not healthy after {seconds}s:\n{self.logs()}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10)

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return self.docker.run("exec", self.name, *command, check=False)

    def stop(self) -> tuple[int, float]:
        """`docker stop` with the deployment's grace period: the exit code and the seconds."""
        started = time.monotonic()
        self.docker.run("stop", "--time", str(self.spec.stop_timeout), self.name, timeout=120)
        seconds = time.monotonic() - started
        exit_code = self.state()["ExitCode"]
        assert isinstance(exit_code, int)
        return exit_code, seconds


def run_once(docker: Docker, image: str, spec: RunSpec, command: Sequence[str] = ()) -> float:
    """Run a one-off container to its end (a migration, say); fail unless it exits 0."""
    started = time.monotonic()
    arguments = ["run", "--rm", "--network", "host", *spec.arguments(), image]
    docker.run(*arguments, *(command or spec.command))
    return time.monotonic() - started
