"""The generated Dockerfile built and run for real, with the deployment files' own settings.

Each variant is rendered, its image built with BuildKit (cold, after an edit, unchanged), its
migration run in a container as the compose file's `migrate` service or the Kubernetes migration
Job runs it, against the real PostgreSQL in a database of its own, and the service started with
the constraints its deployment file sets (non-root user, read-only root filesystem with a tmpfs
at /tmp, no capabilities, no privilege escalation): Docker's own HEALTHCHECK must report it
healthy, its probes and the products API must answer, and `docker stop` must end it with exit
code 0 within its grace period. A SQLite service keeps its file on a named volume.

The Dockerfile starts from the official `python:<version>-slim`. Where the engine reaches no
registry, as on this project's development machine, the tests build a stand-in for that image from
Debian's packages (see `docker_engine.stand_in_image`); it replaces the official image for that
reason only, and the report says which one a run used.

Without a Docker engine these tests skip, saying why; with CI set, a missing engine fails them.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import httpx
import pytest
import yaml
from conftest import Projects
from docker_engine import (
    Build,
    Container,
    Docker,
    RunSpec,
    base_images,
    build_image,
    ci_is_set,
    find_docker,
    provide_base_image,
    run_once,
)
from support import Variant, free_port

from harness import EXECUTE_MYSQL

# Measured on this project's development machine: 219 MB (SQLite, memory cache) and 237 MB
# (PostgreSQL, Redis) on the 145 MB stand-in base, of which the service's own layers (the virtual
# environment, the user, alembic.ini) 75 and 93 MB. The official base is about as large.
IMAGE_BUDGET_MB = 260
SERVICE_LAYERS_BUDGET_MB = 110
# A driver's own weight on top: asyncmy's wheel unpacks to 36 MB of compiled modules (measured
# with `uv pip install asyncmy`), the price of its speed and of its read timeout (see
# the driver's line in extensions/context.py).
DRIVER_ALLOWANCE_MB = {"mysql": 40}
# A Redis database of the container tests' own; each test adds a key prefix of its own too.
REDIS_DATABASE = 12
PRODUCT = {"name": "Kettle", "price": "19.90", "category_id": 1, "sku": "KT-2048-001"}


def container_variant(deployment: str, database: str, cache: str) -> Variant:
    answers = {"deployment": deployment, "database": database, "cache": cache}
    return Variant(f"container-{deployment}-{database}-{cache}", answers)


VARIANTS = [
    container_variant("docker", "sqlite", "memory"),
    container_variant("docker", "postgresql", "redis"),
    container_variant("kubernetes", "postgresql", "redis"),
    container_variant("kubernetes", "mysql", "memory"),
]
# One xdist group: the builds share one engine, one base image and their cached layers.
GROUP = pytest.mark.xdist_group("container")
with_variants = pytest.mark.parametrize(
    "variant", [pytest.param(v, id=v.id, marks=GROUP) for v in VARIANTS]
)
with_sqlite = pytest.mark.parametrize(
    "variant",
    [pytest.param(v, id=v.id, marks=GROUP) for v in VARIANTS if v.answers["database"] == "sqlite"],
)


@pytest.fixture(scope="session")
def docker() -> Docker:
    found = find_docker()
    if isinstance(found, str):
        if ci_is_set():
            message = f"CI is set, and no Docker engine for the container tests: {found}"
            pytest.fail(message, pytrace=False)
        pytest.skip(f"no Docker engine to build and run the image: {found}")
    return found


class Images:
    """Each variant's image, built once per session; every image the session built is removed at
    its end. Base images are provided once."""

    def __init__(self, docker: Docker, projects: Projects, workdir: Path) -> None:
        self.docker = docker
        self._projects = projects
        self._workdir = workdir
        self._session = uuid4().hex[:8]
        self._bases: dict[str, str] = {}
        self._built: set[str] = set()
        self._image_ids: set[str] = set()

    def project(self, variant: Variant) -> Path:
        return self._projects.rendered(variant)

    def tag(self, variant: Variant) -> str:
        return f"{variant.id}:{self._session}"

    def bases(self, variant: Variant) -> dict[str, str]:
        """The Dockerfile's base images, each provided once: reference to what it is and how."""
        references = base_images((self.project(variant) / "Dockerfile").read_text())
        for reference in references:
            if reference not in self._bases:
                self._bases[reference] = provide_base_image(self.docker, reference, self._workdir)
        return {reference: self._bases[reference] for reference in references}

    def build(self, variant: Variant, context: Path, *, no_cache: bool = False) -> Build:
        self.bases(variant)
        result = build_image(self.docker, context, self.tag(variant), no_cache=no_cache)
        self._image_ids.add(result.image_id)
        self._built.add(variant.id)
        return result

    def built(self, variant: Variant) -> str:
        """The variant's image: the one the build test made, else built now."""
        if variant.id not in self._built:
            self.build(variant, self.project(variant))
        return self.tag(variant)

    def remove_all(self) -> None:
        tags = [f"{variant_id}:{self._session}" for variant_id in self._built]
        if tags or self._image_ids:
            self.docker.run("image", "rm", "--force", *tags, *self._image_ids, check=False)


@pytest.fixture(scope="session")
def images(
    docker: Docker, projects: Projects, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Images]:
    """The session's images; afterwards they are removed, and so is the build cache they left.

    Each session's cold builds make new layers that no later build needs (the next session builds
    cold again), so the engine's cache would grow by each run's layers. uv's download cache (a
    cache mount) stays: it keeps the next run's installs quick.
    """
    with sessions_on_the_engine() as last_one_out:
        cache_before = docker.build_cache()
        built = Images(docker, projects, tmp_path_factory.mktemp("base-images"))
        yield built
        built.remove_all()
        # Another session's builds may still need the cache: the last one out prunes.
        if not last_one_out():
            return
        cache_after = docker.build_cache()
        if cache_before is None or cache_after is None:
            warnings.warn("the engine lists no build cache: the session's is left", stacklevel=1)
            return
        left = {id_ for id_, kind in cache_after.items() if kind != "exec.cachemount"}
        refused = docker.prune_build_cache(left - set(cache_before))
        if refused:
            warnings.warn(f"the session's build cache is left: {refused}", stacklevel=1)


@contextmanager
def sessions_on_the_engine() -> Iterator[Callable[[], bool]]:
    """Held (shared) by every test session that builds on this machine's engine, xdist workers
    and other checkouts included; yields a check: is this session the only one left?"""
    path = Path(tempfile.gettempdir()) / "copier-fastapi-service-container-tests.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)

        def last_one_out() -> bool:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        yield last_one_out


def require_servers(variant: Variant) -> dict[str, str]:
    missing = [name for name in variant.server_urls if not os.environ.get(name)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not set: the container talks to the real servers")
    return {name: os.environ[name] for name in variant.server_urls}


# The deployment files, turned into `docker run` arguments


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` with `variables`."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2], match[3]
        if name in variables:
            return variables[name]
        if operator == "?":
            pytest.fail(f"compose.yaml needs {name}: {argument}")
        return argument if operator == "-" else ""

    return re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}", substitute, value)


def duration_seconds(text: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(amount) * units[unit] for amount, unit in re.findall(r"(\d+)([hms])", text))


def compose_spec(
    project: Path, service: str, variables: Mapping[str, str], volume: str | None
) -> RunSpec:
    """`docker compose up <service>`'s container: its security options, volume, environment."""
    spec = load(project / "compose.yaml")["services"][service]
    options: list[str] = []
    if spec.get("read_only"):
        options.append("--read-only")
    options += [arg for path in spec.get("tmpfs", []) for arg in ("--tmpfs", path)]
    options += [arg for cap in spec.get("cap_drop", []) for arg in ("--cap-drop", cap)]
    options += [
        arg for option in spec.get("security_opt", []) for arg in ("--security-opt", option)
    ]
    for mount in spec.get("volumes", []):
        target = mount.split(":", 1)[1]
        options += ["--volume", f"{volume}:{target}"]
    if spec.get("healthcheck", {}).get("disable"):
        options.append("--no-healthcheck")
    environment = {name: interpolate(str(v), variables) for name, v in spec["environment"].items()}
    grace = duration_seconds(spec.get("stop_grace_period", "10s"))
    return RunSpec(tuple(options), environment, tuple(spec.get("command", ())), grace)


def quantity(value: str) -> str:
    """A Kubernetes quantity as `docker run` takes it: 512Mi -> 512m (MiB), 500m CPU -> 0.5."""
    binary = re.fullmatch(r"(\d+)([KMG])i", value)
    if binary:
        return f"{binary[1]}{binary[2].lower()}"
    millis = re.fullmatch(r"(\d+)m", value)
    return str(int(millis[1]) / 1000) if millis else value


def kubernetes_spec(
    project: Path, manifest: str, secret: Mapping[str, str], volume: str | None
) -> RunSpec:
    """The pod of a Deployment or Job in base/, as `docker run` options.

    The pod's and the container's securityContext (user, read-only root, dropped capabilities,
    no privilege escalation; Docker's default seccomp profile is the runtime default), its
    emptyDir volumes (tmpfs), its claimed volume (`volume`), its resource limits, its ConfigMap
    and Secret as environment.
    """
    base = project / "deploy" / "kubernetes" / "base"
    pod = load(base / manifest)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    pod_security, security = pod["securityContext"], container["securityContext"]
    user = security.get("runAsUser", pod_security["runAsUser"])
    group = security.get("runAsGroup", pod_security["runAsGroup"])
    assert pod_security["runAsNonRoot"]
    assert user != 0
    options = ["--user", f"{user}:{group}"]
    if "fsGroup" in pod_security:
        options += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    options += [arg for cap in security["capabilities"]["drop"] for arg in ("--cap-drop", cap)]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges=true"]
    pod_volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        source = pod_volumes[mount["name"]]
        if "emptyDir" in source:
            size = source["emptyDir"].get("sizeLimit")
            suffix = f":size={quantity(size)}" if size else ""
            options += ["--tmpfs", f"{mount['mountPath']}{suffix}"]
        else:
            assert "persistentVolumeClaim" in source
            options += ["--volume", f"{volume}:{mount['mountPath']}"]
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        options += ["--memory", quantity(limits["memory"])]
    if "cpu" in limits:
        options += ["--cpus", quantity(str(limits["cpu"]))]

    environment: dict[str, str] = {}
    config = load(base / "configmap.yaml")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == config["metadata"]["name"]
            environment.update({name: str(value) for name, value in config["data"].items()})
        else:
            environment.update(secret)
    # Docker has no preStop hook: what is left of the grace period after its sleep.
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    grace = pod.get("terminationGracePeriodSeconds", 30) - (int(pre_stop[1]) if pre_stop else 0)
    return RunSpec(tuple(options), environment, tuple(container.get("command", ())), grace)


@dataclass(frozen=True)
class Deployment:
    """The migration and the service as the variant's deployment files run them."""

    migration: RunSpec
    service: RunSpec
    volume: str | None


def with_overrides(spec: RunSpec, overrides: Mapping[str, str]) -> RunSpec:
    return RunSpec(spec.options, {**spec.environment, **overrides}, spec.command, spec.stop_timeout)


@contextmanager
def deployed(
    docker: Docker, image: str, project: Path, variant: Variant, servers: Mapping[str, str]
) -> Iterator[Deployment]:
    """The deployment's settings pointed at the test servers, in a database and volume of its own.

    Both are dropped afterwards. compose.yaml names the servers by their service names, and the
    Kubernetes Secret leaves their URLs to the operator: the test servers stand in, reached with
    the driver the compose file names. Two settings are the test's own: APP_PORT, a free port,
    since the container shares the host's network, and a Redis key prefix of its own.
    """
    compose_environment = load(project / "compose.yaml")["services"]["app"]["environment"]
    values = {"APP_SECRET_KEY": secrets.token_urlsafe(48)}
    overrides = {"APP_PORT": str(free_port()), "APP_CACHE_PREFIX": f"container-{uuid4().hex}"}
    server = servers.get("TEST_POSTGRES_URL") or servers.get("TEST_MYSQL_URL")
    database = f"container_{uuid4().hex[:12]}" if server else None
    volume = f"{variant.id}-{uuid4().hex[:8]}" if variant.answers["database"] == "sqlite" else None
    if server and database:
        driver = urlsplit(compose_environment["APP_DATABASE_URL"]).scheme
        overrides["APP_DATABASE_URL"] = f"{driver}://{urlsplit(server).netloc}/{database}"
        execute_sql(docker, image, server, create_database(server, database))
    if "TEST_REDIS_URL" in servers:
        scheme = urlsplit(compose_environment["APP_REDIS_URL"]).scheme
        netloc = urlsplit(servers["TEST_REDIS_URL"]).netloc
        overrides["APP_REDIS_URL"] = f"{scheme}://{netloc}/{REDIS_DATABASE}"
    if volume:
        docker.run("volume", "create", volume)
    try:
        if variant.answers["deployment"] == "kubernetes":
            secret_file = project / "deploy" / "kubernetes" / "base" / "secret.example.yaml"
            values |= overrides
            secret = {name: values[name] for name in load(secret_file)["stringData"]}
            migration = kubernetes_spec(project, "migration-job.yaml", secret, volume)
            service = kubernetes_spec(project, "deployment.yaml", secret, volume)
        else:
            unused = "unused: the test server has its own"
            variables = {**values, "POSTGRES_PASSWORD": unused, "MARIADB_PASSWORD": unused}
            migration = compose_spec(project, "migrate", variables, volume)
            service = compose_spec(project, "app", variables, volume)
        yield Deployment(
            with_overrides(migration, overrides), with_overrides(service, overrides), volume
        )
    finally:
        if server and database:
            execute_sql(docker, image, server, drop_database(server, database))
        if volume:
            docker.run("volume", "rm", "--force", volume, check=False)


# The image's own PostgreSQL driver creates and drops the throw-away database (MySQL's: the
# harness's EXECUTE_MYSQL).
EXECUTE_SQL = """
import asyncio, sys
import asyncpg

async def main():
    connection = await asyncpg.connect(sys.argv[1], timeout=10)
    await connection.execute(sys.argv[2])
    await connection.close()

asyncio.run(main())
"""


def create_database(server: str, name: str) -> str:
    if server.startswith("mysql"):
        return f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    return f'CREATE DATABASE "{name}"'


def drop_database(server: str, name: str) -> str:
    if server.startswith("mysql"):
        return f"DROP DATABASE `{name}`"
    return f'DROP DATABASE "{name}" WITH (FORCE)'


def execute_sql(docker: Docker, image: str, server: str, statement: str) -> None:
    """The image's own database driver creates and drops the throw-away database."""
    script = EXECUTE_MYSQL if server.startswith("mysql") else EXECUTE_SQL
    docker.run("run", "--rm", "--network", "host", image, "python", "-c", script, server, statement)


def probe_paths(project: Path, variant: Variant) -> set[str]:
    """The paths the orchestrator probes: the pod's probes, or the HTTP contract's two."""
    if variant.answers["deployment"] != "kubernetes":
        return {"/health/live", "/health/ready"}
    pod = load(project / "deploy" / "kubernetes" / "base" / "deployment.yaml")
    [container] = pod["spec"]["template"]["spec"]["containers"]
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    return {container[kind]["httpGet"]["path"] for kind in kinds if kind in container}


def container_name(variant: Variant) -> str:
    return f"{variant.id}-{uuid4().hex[:8]}"


# The tests


@with_variants
def test_image_builds_cold_then_from_cache_within_the_size_budget(
    images: Images, variant: Variant, tmp_path: Path
) -> None:
    docker = images.docker
    context = tmp_path / "context"
    shutil.copytree(images.project(variant), context)
    bases = images.bases(variant)
    tag = images.tag(variant)

    cold = images.build(variant, context, no_cache=True)
    readme = context / "README.md"
    # An edit of this run's own: an earlier run's build of the same edit would be in the cache.
    readme.write_text(readme.read_text() + f"\nEdited after the first build ({uuid4()}).\n")
    edited = images.build(variant, context)
    unchanged = images.build(variant, context)  # the image the later tests run

    runtime_base = list(bases)[-1]
    allowance = DRIVER_ALLOWANCE_MB.get(str(variant.answers.get("database")), 0)
    size_mb = docker.image_size(tag) / 1e6
    service_mb = size_mb - docker.image_size(runtime_base) / 1e6
    print(
        f"{variant.id} on {', '.join(f'{ref} ({how})' for ref, how in bases.items())}, "
        f"engine {docker.server_version}: build cold {cold.seconds:.1f} s "
        f"(no layer cache; uv's download cache mount kept), after a README edit "
        f"{edited.seconds:.1f} s ({edited.cached_count()} steps cached), unchanged "
        f"{unchanged.seconds:.1f} s ({unchanged.cached_count()} cached); image {size_mb:.0f} MB "
        f"(budget {IMAGE_BUDGET_MB + allowance}), of which the service's layers "
        f"{service_mb:.0f} MB (budget {SERVICE_LAYERS_BUDGET_MB + allowance})"
    )
    assert not any(cold.steps.values()), cold.steps
    # The dependencies are their own layer: an edit outside pyproject.toml and uv.lock keeps it.
    assert edited.cached("pip install")
    assert edited.cached("--no-install-project")
    assert not edited.cached("--no-editable")
    assert all(unchanged.steps.values()), unchanged.steps
    assert size_mb <= IMAGE_BUDGET_MB + allowance
    assert service_mb <= SERVICE_LAYERS_BUDGET_MB + allowance


@with_variants
def test_migrated_container_serves_under_the_deployment_constraints_and_stops_cleanly(
    images: Images, variant: Variant
) -> None:
    servers = require_servers(variant)
    image = images.built(variant)
    project = images.project(variant)
    docker = images.docker
    with deployed(docker, image, project, variant, servers) as deployment:
        migration_seconds = run_once(docker, image, deployment.migration)
        with Container(docker, image, deployment.service, container_name(variant)) as service:
            healthy_after = service.wait_until_healthy()
            user = service.exec("id", "-u")
            root_write = service.exec("touch", "/app/written-at-run-time")
            tmp_write = service.exec("touch", "/tmp/written-at-run-time")
            probes = {path: service.get(path).status_code for path in probe_paths(project, variant)}
            ready = service.get("/health/ready")
            created = httpx.post(f"{service.url}/api/v1/products", json=PRODUCT, timeout=10)
            assert created.status_code == 201, created.text
            product_url = f"{service.url}/api/v1/products/{created.json()['id']}"
            reads = [httpx.get(product_url, timeout=10) for _ in range(2)]
            deleted = httpx.delete(product_url, timeout=10)
            gone = httpx.get(product_url, timeout=10)
            exit_code, stop_seconds = service.stop()
            logs = service.logs()

    graceful = int(deployment.service.environment["APP_GRACEFUL_TIMEOUT"])
    print(
        f"{variant.id}: migration {migration_seconds:.1f} s, healthy after {healthy_after:.1f} s "
        f"(health interval {service.health_interval}), docker stop {stop_seconds:.1f} s, "
        f"exit code {exit_code}"
    )
    assert user.stdout.strip() == "10001"
    assert root_write.returncode != 0
    assert "Read-only file system" in root_write.stderr
    assert tmp_write.returncode == 0, tmp_write.stderr
    assert probes == dict.fromkeys(probes, 200)
    expected_checks = {"database": "ok"}
    if variant.answers["cache"] == "redis":
        expected_checks["redis"] = "ok"
    assert ready.json() == {"status": "healthy", "checks": expected_checks}
    assert [read.status_code for read in reads] == [200, 200]
    assert [read.headers["x-cache"] for read in reads] == ["MISS", "HIT"]
    assert reads[1].json() == created.json()
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert exit_code == 0, logs
    assert stop_seconds < graceful, logs
    assert "service stopped" in logs
    assert "Traceback" not in logs


@with_sqlite
def test_sqlite_volume_is_the_service_users_and_keeps_the_data_for_the_next_container(
    images: Images, variant: Variant
) -> None:
    servers = require_servers(variant)
    image = images.built(variant)
    docker = images.docker
    with deployed(docker, image, images.project(variant), variant, servers) as deployment:
        run_once(docker, image, deployment.migration)
        mount = f"{deployment.volume}:/data"
        owner = docker.run("run", "--rm", "--volume", mount, image, "stat", "-c", "%u:%g", "/data")
        with Container(docker, image, deployment.service, container_name(variant)) as first:
            first.wait_until_healthy()
            created = httpx.post(f"{first.url}/api/v1/products", json=PRODUCT, timeout=10)
            assert created.status_code == 201, created.text
            first_exit, _ = first.stop()
        with Container(docker, image, deployment.service, container_name(variant)) as second:
            healthy_after = second.wait_until_healthy()
            read = httpx.get(f"{second.url}/api/v1/products/{created.json()['id']}", timeout=10)
            second_exit, _ = second.stop()

    print(
        f"{variant.id}: the next container on the same volume healthy after {healthy_after:.1f} s"
    )
    assert owner.stdout.strip() == "10001:10001"
    assert read.status_code == 200
    assert read.headers["x-cache"] == "MISS"  # from the file, not from the first one's memory
    assert read.json() == created.json()
    assert (first_exit, second_exit) == (0, 0)
