"""Jinja extensions for the template: filters for defaults and validators, and derived values."""

from __future__ import annotations

import keyword
import re
import secrets
import subprocess
import sys
from typing import Any

from copier_template_extensions import ContextHook
from jinja2 import Environment
from jinja2.ext import Extension


def git_config(key: str, fallback: str = "") -> str:
    """The git setting `key` (e.g. user.name), or `fallback` when git or the key is missing."""
    try:
        result = subprocess.run(
            ["git", "config", "--get", key], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    return result.stdout.strip() or fallback


def slugify(text: str) -> str:
    """`My Billing API!` -> `my-billing-api`."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"service-{slug}"
    return slug or "service"


def is_reserved_name(name: str) -> bool:
    """A package name that would shadow a keyword or a standard library module."""
    return keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in sys.stdlib_module_names


class GitConfigExtension(Extension):
    """Filters used by the questions' defaults and validators."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["git_config"] = git_config
        environment.filters["slugify"] = slugify
        environment.filters["is_reserved_name"] = is_reserved_name


BASE_DEPENDENCIES = [
    "fastapi>=0.121",
    "pydantic>=2.9",
    "pydantic-settings>=2.7",
    "starlette>=0.40",
    "uvicorn[standard]>=0.32",
]
DATABASE_DEPENDENCIES = ["alembic>=1.14", "anyio>=4.6", "sqlalchemy[asyncio]>=2.0.36"]
DATABASE_DRIVERS = {"sqlite": "aiosqlite>=0.20", "postgresql": "asyncpg>=0.30"}
DEV_DEPENDENCIES = [
    "deptry>=0.20",
    "httpx>=0.27",
    "mypy>=1.13",
    "pytest>=8.3",
    "pytest-asyncio>=0.24",
    "ruff>=0.8",
]


def dependencies_for(answers: dict[str, Any]) -> list[str]:
    """The runtime dependencies that the chosen modules import."""
    deps = list(BASE_DEPENDENCIES)
    if answers["logging"] == "structlog":
        deps += ["orjson>=3.10", "structlog>=24.4"]
    if answers["database"] != "none":
        deps += [*DATABASE_DEPENDENCIES, DATABASE_DRIVERS[answers["database"]]]
    elif answers["example_api"]:
        deps.append("anyio>=4.6")
    if answers["cache"] == "redis":
        deps.append("redis>=5.2")
    if answers["auth"] == "jwt":
        deps.append("pyjwt>=2.10")
    if answers["http_client"]:
        deps.append("httpx>=0.27")
    if answers["metrics"]:
        deps += ["anyio>=4.6", "prometheus-client>=0.21"]
    if jobs_on(answers):
        # SAQ runs the jobs on Redis; the service opens the Redis client itself (timeouts).
        deps += ["redis>=5.2", "saq[redis]>=0.26"]
    if answers["docs"] == "self_hosted":
        # docs.py serves the Swagger UI and ReDoc files that this package ships.
        deps.append("fastapi-offline>=1.7.7,<2")
    return sorted(set(deps))


def jobs_on(answers: dict[str, Any]) -> bool:
    """`jobs` is asked only with the example API and a database; skipped, it is off."""
    return bool(answers.get("jobs")) and answers["example_api"] and answers["database"] != "none"


def dev_dependencies_for(answers: dict[str, Any]) -> list[str]:
    """The tools and test libraries of the generated project."""
    deps = list(DEV_DEPENDENCIES)
    if answers["database"] == "postgresql":
        # The suite runs on a throw-away SQLite file too, when no PostgreSQL is at hand.
        deps.append(DATABASE_DRIVERS["sqlite"])
    if answers["example_api"]:
        # tests/test_api_fuzz.py: the API checked against its own OpenAPI schema.
        deps.append("schemathesis>=4.3")
    return sorted(deps)


# The answers that the derived values read.
ANSWERS_USED = {
    "python_version",
    "logging",
    "database",
    "cache",
    "example_api",
    "auth",
    "http_client",
    "metrics",
    "docs",
    "project_slug",
    "package_name",
}


# The versions `python_version` offers in copier.yml, oldest first.
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")


def ci_python_versions(floor: str) -> list[str]:
    """The Python versions CI tests on: the project's floor and every newer one."""
    start = PYTHON_VERSIONS.index(floor)
    return list(PYTHON_VERSIONS[start:])


DEFAULT_DATABASE_URLS = {
    "sqlite": "sqlite+aiosqlite:///./{slug}.db",
    "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:5432/{package}",
}


def features_for(answers: dict[str, Any]) -> list[str]:
    """The feature modules of the service, in the order main.py composes them.

    Resources open in this order (and close in reverse); a module listed later may use what an
    earlier one opened (the Redis cache takes the in-process cache's place). Middleware order is
    each middleware's own `Layer`, not this list's.
    """
    features = ["logging", "middleware", "errors"]
    if answers["database"] != "none":
        features.append("db")
    if answers["cache"] != "none":
        features.append("cache")
    if answers["cache"] == "redis":
        features.append("redis_cache")
    if answers["auth"] != "none":
        features.append("security")
    if answers["http_client"]:
        features.append("http_client")
    if answers["metrics"]:
        features.append("metrics")
    if jobs_on(answers):
        features.append("jobs")
    return [*features, "health", "docs"]


def settings_mixins_for(answers: dict[str, Any]) -> list[dict[str, str]]:
    """The settings classes that config.py combines into `Settings`, most specific first."""
    mixins = []
    if answers["database"] != "none":
        mixins.append({"module": "db", "settings": "DatabaseSettings"})
    if answers["cache"] == "memory":
        mixins.append({"module": "cache", "settings": "CacheSettings"})
    if answers["cache"] == "redis":
        mixins.append({"module": "redis_cache", "settings": "RedisSettings"})
    if answers["auth"] == "jwt":
        mixins.append({"module": "security", "settings": "JwtSettings"})
    if answers["http_client"]:
        mixins.append({"module": "http_client", "settings": "HttpClientSettings"})
    if jobs_on(answers):
        mixins.append({"module": "jobs", "settings": "JobsSettings"})
    return [*mixins, {"module": "settings", "settings": "CoreSettings"}]


def test_fixtures_for(answers: dict[str, Any]) -> list[dict[str, Any]]:
    """The generated tests/fixtures/ modules; `settings`: it gives settings to the app under test."""
    fixtures = []
    if answers["database"] != "none":
        fixtures.append({"module": "database", "settings": True})
    if answers["cache"] != "none":
        fixtures.append({"module": "cache", "settings": answers["cache"] == "redis"})
    if jobs_on(answers):
        fixtures.append({"module": "jobs", "settings": True})
    return [*fixtures, {"module": "auth", "settings": False}]


def test_servers_for(answers: dict[str, Any]) -> list[str]:
    """The variables naming the real servers the generated suite tests against when set."""
    servers = []
    if answers["database"] == "postgresql":
        servers.append("TEST_POSTGRES_URL")
    if answers["cache"] == "redis" or jobs_on(answers):
        servers.append("TEST_REDIS_URL")
    return servers


class ContextUpdater(ContextHook):
    """Values derived from the answers, computed in one place for every template file."""

    def hook(self, context: dict[str, Any]) -> None:
        # The hook also runs while copier prompts, before (some of) the answers exist.
        if not ANSWERS_USED.issubset(context):
            return
        context["dependencies"] = dependencies_for(context)
        context["dev_dependencies"] = dev_dependencies_for(context)
        context["python_floor"] = context["python_version"].replace(".", "")
        context["ci_python_versions"] = ci_python_versions(context["python_version"])
        context["secret_key"] = secrets.token_urlsafe(48)
        context["features"] = features_for(context)
        context["settings_mixins"] = settings_mixins_for(context)
        context["test_fixtures"] = test_fixtures_for(context)
        context["test_servers"] = test_servers_for(context)
        context["jobs"] = jobs_on(context)
        if context["database"] != "none":
            context["default_database_url"] = DEFAULT_DATABASE_URLS[context["database"]].format(
                slug=context["project_slug"], package=context["package_name"]
            )
