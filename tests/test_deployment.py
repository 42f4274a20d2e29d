"""Deployment files: every render lints and validates with the real tools, no container engine.

These variants are rendered only (never installed): the deployment answer changes no Python code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from conftest import Projects
from support import LEFTOVER_JINJA, Variant, run

TOOLS = Path(sys.executable).parent
# An older release that clusters still run, and the newest that the validator has schemas for.
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
YAMLLINT_CONFIG = (
    "{extends: default, rules: {"
    "line-length: {max: 100, allow-non-breakable-inline-mappings: true}, "
    "document-start: disable, truthy: {check-keys: false}}}"
)


def deployment_variant(deployment: str, database: str, cache: str, jobs: bool = False) -> Variant:
    answers = {"deployment": deployment, "database": database, "cache": cache, "jobs": jobs}
    name = f"deploy-{deployment}-{database}-{cache}" + ("-jobs" if jobs else "")
    return Variant(name, answers)


# The database and whether Redis runs are the answers that change the Docker files.
DOCKER = [
    deployment_variant("docker", database, cache)
    for database in ("none", "sqlite", "postgresql", "mysql")
    for cache in ("memory", "redis")
] + [deployment_variant("docker", "sqlite", "memory", jobs=True)]
KUBERNETES = [
    deployment_variant("kubernetes", "none", "none"),
    deployment_variant("kubernetes", "sqlite", "memory"),
    deployment_variant("kubernetes", "postgresql", "redis"),
    deployment_variant("kubernetes", "mysql", "none"),
    deployment_variant("kubernetes", "sqlite", "memory", jobs=True),
    deployment_variant("kubernetes", "postgresql", "none", jobs=True),
    Variant("deploy-kubernetes-stdlib-logging", {"deployment": "kubernetes", "logging": "stdlib"}),
    Variant("deploy-kubernetes-tracing", {"deployment": "kubernetes", "tracing": True}),
]
# Tracing adds an OpenTelemetry Collector to compose and its settings to the ConfigMap.
TRACING = [
    Variant("deploy-docker-tracing", {"deployment": "docker", "tracing": True}),
    KUBERNETES[-1],
]
NO_DEPLOYMENT = Variant("deploy-none", {"deployment": "none"})

with_docker = pytest.mark.parametrize(
    "variant", [v.param() for v in DOCKER + TRACING[:1] + KUBERNETES]
)
with_kubernetes = pytest.mark.parametrize("variant", [v.param() for v in KUBERNETES])
with_tracing = pytest.mark.parametrize("variant", [v.param() for v in TRACING])


def answer(variant: Variant, question: str) -> object:
    defaults = {
        "database": "sqlite",
        "cache": "memory",
        "logging": "structlog",
        "tracing": False,
        "jobs": False,
    }
    return variant.answers.get(question, defaults.get(question))


def deployment_files(project: Path) -> list[Path]:
    names = ("Dockerfile", ".dockerignore", "compose.yaml", "otel-collector.yaml")
    files = [project / name for name in names]
    deploy_folder = sorted(path for path in (project / "deploy").rglob("*") if path.is_file())
    return [path for path in files if path.exists()] + deploy_folder


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kubernetes_dir(project: Path) -> Path:
    return project / "deploy" / "kubernetes"


def manifests(project: Path) -> list[Path]:
    """Every Kubernetes resource file: kustomization files are kustomize's, not the API's."""
    files = sorted(kubernetes_dir(project).rglob("*.yaml"))
    return [path for path in files if path.name != "kustomization.yaml"]


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last build stage, continuation lines joined."""
    logical = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line.strip() for line in logical.splitlines()]
    instructions = [line.partition(" ")[::2] for line in lines if line and line[0] != "#"]
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_no_deployment_answer_renders_no_deployment_file(projects: Projects) -> None:
    project = projects.rendered(NO_DEPLOYMENT)
    assert deployment_files(project) == []
    assert "## Deploying" not in (project / "README.md").read_text()


@with_docker
def test_deployment_files_have_no_leftover_jinja_and_none_is_empty(
    projects: Projects, variant: Variant
) -> None:
    project = projects.rendered(variant)
    files = deployment_files(project)
    assert [path for path in files if path.stat().st_size == 0] == []
    assert [path for path in files if LEFTOVER_JINJA.search(path.read_bytes())] == []
    assert "## Deploying" in (project / "README.md").read_text()


@with_docker
def test_dockerfile_passes_hadolint(projects: Projects, variant: Variant) -> None:
    project = projects.rendered(variant)
    hadolint = [TOOLS / "hadolint", "--no-color", "--failure-threshold", "style"]
    run([*hadolint, "Dockerfile"], project)


@with_docker
def test_image_runs_the_package_as_non_root_with_a_liveness_healthcheck(
    projects: Projects, variant: Variant
) -> None:
    project = projects.rendered(variant)
    dockerfile = (project / "Dockerfile").read_text()
    runtime = final_stage(dockerfile)
    arguments = {keyword: rest for keyword, rest in runtime}
    copied = [rest for keyword, rest in runtime if keyword == "COPY"]

    assert "UV_COMPILE_BYTECODE=1" in dockerfile
    assert re.search(r"pip install --no-cache-dir uv==[\d.]+\n", dockerfile)
    assert "APP_HOST=0.0.0.0" in arguments["ENV"]
    assert arguments["USER"].split(":")[0] not in {"root", "0"}
    assert "/health/live" in arguments["HEALTHCHECK"]
    assert "urllib.request" in arguments["HEALTHCHECK"]
    assert yaml.safe_load(arguments["CMD"]) == ["python", "-m", variant.package]
    assert ("alembic.ini ./" in copied) == (answer(variant, "database") != "none")


@with_docker
def test_dockerignore_keeps_environment_secrets_and_tests_out_of_the_image(
    projects: Projects, variant: Variant
) -> None:
    ignored = (projects.rendered(variant) / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", ".env", "tests", ".pytest_cache"} <= set(ignored)
    assert "README.md" not in ignored  # the wheel build reads it


@with_docker
def test_compose_file_matches_the_compose_specification(
    projects: Projects, variant: Variant
) -> None:
    check = [TOOLS / "check-jsonschema", "--builtin-schema", "vendor.compose-spec"]
    run([*check, "compose.yaml"], projects.rendered(variant))


@with_docker
def test_compose_starts_backing_services_healthy_and_migrated_first(
    projects: Projects, variant: Variant
) -> None:
    services = load(projects.rendered(variant) / "compose.yaml")["services"]
    database, cache = answer(variant, "database"), answer(variant, "cache")
    expected = {"app"}
    expected |= {"migrate"} if database != "none" else set()
    expected |= {"postgres"} if database == "postgresql" else set()
    expected |= {"mariadb"} if database == "mysql" else set()
    expected |= {"redis"} if cache == "redis" else set()
    expected |= {"otel-collector", "jaeger"} if answer(variant, "tracing") else set()
    expected |= {"worker", "broker"} if answer(variant, "jobs") else set()
    assert set(services) == expected

    environment = services["app"]["environment"]
    assert environment["APP_ENVIRONMENT"] == "production"
    assert ("APP_DATABASE_URL" in environment) == (database != "none")
    assert ("APP_REDIS_URL" in environment) == (cache == "redis")
    assert ("OTEL_EXPORTER_OTLP_ENDPOINT" in environment) == bool(answer(variant, "tracing"))
    if database == "postgresql":
        assert environment["APP_DATABASE_URL"].startswith("postgresql+asyncpg://")
    if database == "mysql":
        assert environment["APP_DATABASE_URL"].startswith("mysql+asyncmy://")
    if database == "sqlite":
        assert environment["APP_DATABASE_URL"].startswith("sqlite+aiosqlite:////data/")

    depends_on = services["app"].get("depends_on", {})
    for backing in expected & {"postgres", "mariadb", "redis", "broker"}:
        assert services[backing]["healthcheck"]["test"]
        assert depends_on[backing] == {"condition": "service_healthy"}
    if database != "none":
        assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}


@with_docker
def test_yaml_files_pass_yamllint(projects: Projects, variant: Variant) -> None:
    project = projects.rendered(variant)
    files = [path for path in deployment_files(project) if path.suffix == ".yaml"]
    run([TOOLS / "yamllint", "--strict", "-d", YAMLLINT_CONFIG, *files], project)


@with_docker
def test_no_secret_literal_in_deployment_files(projects: Projects, variant: Variant) -> None:
    project = projects.rendered(variant)
    env_file = dict(
        line.split("=", 1) for line in (project / ".env").read_text().splitlines() if "=" in line
    )
    generated_secret = env_file["APP_SECRET_KEY"]
    credentials = re.compile(r"://[^\s:/@]+:([^\s@]+)@")
    for path in deployment_files(project):
        text = path.read_text()
        assert generated_secret not in text, path.name
        for password in credentials.findall(text):
            assert re.fullmatch(r"\$\{\w+\}|[A-Z]+", password), f"{path.name}: {password}"
    assert not re.search(r"^(ENV|ARG)\b.*SECRET", (project / "Dockerfile").read_text(), re.M)

    services = load(project / "compose.yaml")["services"]
    assert services["app"]["environment"]["APP_SECRET_KEY"].startswith("${APP_SECRET_KEY:?")
    if "postgres" in services:
        password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
        assert password.startswith("${POSTGRES_PASSWORD:?")
    if "mariadb" in services:
        password = services["mariadb"]["environment"]["MARIADB_PASSWORD"]
        assert password.startswith("${MARIADB_PASSWORD:?")
    secret_template = kubernetes_dir(project) / "base" / "secret.example.yaml"
    if secret_template.exists():
        assert set(load(secret_template)["stringData"].values()) == {""}


@with_kubernetes
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_are_valid_resources(
    projects: Projects, variant: Variant, version: str
) -> None:
    project = projects.rendered(variant)
    validate = [TOOLS / "kubernetes-validate", "--strict", "--kubernetes-version", version]
    run([*validate, *manifests(project)], project)


@with_kubernetes
def test_kustomizations_list_existing_resources_and_leave_the_secret_out(
    projects: Projects, variant: Variant
) -> None:
    project = projects.rendered(variant)
    for kustomization in sorted(kubernetes_dir(project).rglob("kustomization.yaml")):
        folder = kustomization.parent
        listed = load(kustomization)["resources"]
        assert all((folder / entry).exists() for entry in listed), kustomization
    base = kubernetes_dir(project) / "base"
    listed = set(load(base / "kustomization.yaml")["resources"])
    on_disk = {path.name for path in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"secret.example.yaml"}


@with_kubernetes
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_patches_apply_to_the_base_and_stay_valid(
    projects: Projects, variant: Variant, version: str, tmp_path: Path
) -> None:
    project = projects.rendered(variant)
    overlay = load(kubernetes_dir(project) / "overlays" / "production" / "kustomization.yaml")
    base = [load(path) for path in manifests(project) if path.parent.name == "base"]
    patched = []
    for patch in overlay["patches"]:
        target = patch["target"]
        [resource] = [
            r
            for r in base
            if (r["kind"], r["metadata"]["name"]) == (target["kind"], target["name"])
        ]
        result = jsonpatch.apply_patch(resource, yaml.safe_load(patch["patch"]))
        patched.append(tmp_path / f"{target['kind']}.yaml")
        patched[-1].write_text(yaml.safe_dump(result))
    validate = [TOOLS / "kubernetes-validate", "--strict", "--kubernetes-version", version]
    run([*validate, *patched], tmp_path)


@with_kubernetes
def test_pods_are_probed_hardened_and_drain_before_they_stop(
    projects: Projects, variant: Variant
) -> None:
    base = kubernetes_dir(projects.rendered(variant)) / "base"
    pod = load(base / "deployment.yaml")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = load(base / "configmap.yaml")["data"]

    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in pod["containers"] + pod.get("initContainers", []):
        security = each["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in each["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]

    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    # The requests get the graceful timeout, then the service as long again to close (its last
    # spans' export included): Granian kills a worker only after both.
    graceful = int(config["APP_GRACEFUL_TIMEOUT"]) * 2
    drain = int(sleep[1]) + graceful
    assert pod["terminationGracePeriodSeconds"] > drain
    assert ("APP_LOG_FORMAT" in config) == (answer(variant, "logging") == "structlog")
    assert ("OTEL_EXPORTER_OTLP_ENDPOINT" in config) == bool(answer(variant, "tracing"))


@with_kubernetes
def test_replicas_scale_out_on_cpu_unless_sqlite_pins_one(
    projects: Projects, variant: Variant
) -> None:
    base = kubernetes_dir(projects.rendered(variant)) / "base"
    deployment = load(base / "deployment.yaml")
    database = answer(variant, "database")
    if database == "sqlite":
        assert deployment["spec"]["replicas"] == 1
        assert not (base / "hpa.yaml").exists()
        [init] = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["command"] == ["alembic", "upgrade", "head"]
        return

    hpa = load(base / "hpa.yaml")["spec"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    job = base / "migration-job.yaml"
    assert job.exists() == (database in ("postgresql", "mysql"))
    if job.exists():
        [container] = load(job)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["alembic", "upgrade", "head"]


@with_tracing
def test_tracing_settings_name_the_collector_and_sample_as_configured(
    projects: Projects, variant: Variant
) -> None:
    project = projects.rendered(variant)
    if answer(variant, "deployment") == "kubernetes":
        config = load(kubernetes_dir(project) / "base" / "configmap.yaml")["data"]
        assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert 0 < float(config["OTEL_TRACES_SAMPLER_ARG"]) <= 1
        assert config["OTEL_SERVICE_NAME"] == "my-service"
        # The probes are left untraced.
        assert re.search(config["OTEL_PYTHON_EXCLUDED_URLS"], "http://pod:8000/health/ready")
    assert config_endpoint(project).startswith("http://otel-collector:")


def config_endpoint(project: Path) -> str:
    endpoint: str = load(project / "compose.yaml")["services"]["app"]["environment"][
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ]
    return endpoint


@with_tracing
def test_compose_collector_receives_otlp_http_where_the_service_sends_it(
    projects: Projects, variant: Variant
) -> None:
    """No collector binary here: its configuration is checked for the structure it needs."""
    project = projects.rendered(variant)
    services = load(project / "compose.yaml")["services"]
    collector = services["otel-collector"]
    config = load(project / "otel-collector.yaml")
    # The file compose mounts is the one the collector is told to read.
    [mount] = collector["volumes"]
    source, target, mode = mount.split(":")
    assert (project / source).resolve() == (project / "otel-collector.yaml").resolve()
    assert collector["command"] == [f"--config={target}"]
    assert mode == "ro"
    # An OTLP/HTTP receiver on the port the service sends to.
    http = config["receivers"]["otlp"]["protocols"]["http"]
    assert http["endpoint"] == "0.0.0.0:" + config_endpoint(project).rsplit(":", 1)[1]
    assert "grpc" not in config["receivers"]["otlp"]["protocols"]
    # A traces pipeline that uses only components defined above, and every one defined.
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces"}
    for kind in ("receivers", "processors", "exporters"):
        assert pipelines["traces"][kind]
        assert set(pipelines["traces"][kind]) == set(config[kind]), kind
    assert pipelines["traces"]["processors"][0] == "memory_limiter"
    # The service waits for the collector to start, and has time to send its spans at shutdown.
    app = services["app"]
    assert app["depends_on"]["otel-collector"] == {"condition": "service_started"}
    graceful = int(app["environment"]["APP_GRACEFUL_TIMEOUT"])
    assert int(app["stop_grace_period"].rstrip("s")) > 2 * graceful


@with_tracing
def test_compose_shows_the_traces_in_a_viewer_on_this_machine(
    projects: Projects, variant: Variant
) -> None:
    """The collector passes the traces to Jaeger over OTLP/HTTP, whose UI compose publishes on
    loopback; the README names the address. No image can be pulled here: the wiring is checked."""
    project = projects.rendered(variant)
    services = load(project / "compose.yaml")["services"]
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")
    assert jaeger["ports"] == ["127.0.0.1:16686:16686"]
    # Jaeger's OTLP/HTTP receiver listens beyond its own container, where the collector sends.
    [receiver] = [arg for arg in jaeger["command"] if arg.startswith("receivers.otlp.")]
    assert receiver == "receivers.otlp.protocols.http.endpoint=0.0.0.0:4318"
    config = load(project / "otel-collector.yaml")
    assert config["exporters"]["otlphttp/jaeger"] == {"endpoint": "http://jaeger:4318"}
    assert "otlphttp/jaeger" in config["service"]["pipelines"]["traces"]["exporters"]
    assert services["otel-collector"]["depends_on"]["jaeger"] == {"condition": "service_started"}
    assert "http://127.0.0.1:16686" in (project / "README.md").read_text()


@with_docker
def test_compose_runs_the_worker_beside_the_api_on_a_queue_that_keeps_its_jobs(
    projects: Projects, variant: Variant
) -> None:
    services = load(projects.rendered(variant) / "compose.yaml")["services"]
    if not answer(variant, "jobs"):
        assert "worker" not in services
        assert "APP_JOBS_BROKER_URL" not in services["app"]["environment"]
        return
    worker, app = services["worker"], services["app"]
    assert worker["command"] == ["python", "-m", variant.package + ".worker"]
    assert worker["environment"] == app["environment"]
    assert app["environment"]["APP_JOBS_BROKER_URL"] == "redis://broker:6379/0"
    assert worker["depends_on"]["broker"] == {"condition": "service_healthy"}
    if answer(variant, "database") != "none":
        assert worker["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "/health/live" in " ".join(worker["healthcheck"]["test"])
    shutdown = int(app["environment"]["APP_JOBS_SHUTDOWN_SECONDS"])
    assert int(worker["stop_grace_period"].rstrip("s")) > shutdown
    broker = services["broker"]["command"]
    assert "noeviction" in broker
    assert "--appendonly yes" in broker


@with_kubernetes
def test_the_worker_has_its_own_pods_probes_and_time_to_finish_its_jobs(
    projects: Projects, variant: Variant
) -> None:
    base = kubernetes_dir(projects.rendered(variant)) / "base"
    path = base / "worker-deployment.yaml"
    assert path.exists() == bool(answer(variant, "jobs"))
    if not path.exists():
        return
    worker = load(path)
    pod = worker["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = load(base / "configmap.yaml")["data"]
    secret = load(base / "secret.example.yaml")["stringData"]

    assert worker["metadata"]["name"] != load(base / "deployment.yaml")["metadata"]["name"]
    assert container["command"] == ["python", "-m", variant.package + ".worker"]
    [port] = container["ports"]
    assert str(port["containerPort"]) == config["APP_JOBS_WORKER_PORT"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "health"}
    assert pod["terminationGracePeriodSeconds"] > int(config["APP_JOBS_SHUTDOWN_SECONDS"])
    assert "APP_JOBS_BROKER_URL" in secret
    if answer(variant, "database") == "sqlite":
        assert worker["spec"]["replicas"] == 1
        affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert affinity[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    else:
        assert worker["spec"]["replicas"] >= 2
