"""Jinja extensions for the template: filters for defaults and validators, and derived values."""

from __future__ import annotations

import keyword
import re
import secrets
import subprocess
import sys
import unicodedata
from email.errors import MessageError
from email.headerregistry import Address
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


# Kubernetes object names (`<slug>-migrate`) and PostgreSQL identifiers (the database and its
# user are named after the package) stop at 63 characters.
NAME_MAX_LENGTH = 50

# Latin letters that Unicode does not decompose into a base letter and an accent.
TRANSLITERATIONS = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "ss",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "ø": "o",
        "Ø": "o",
        "ł": "l",
        "Ł": "l",
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "Ð": "d",
        "þ": "th",
        "Þ": "th",
        "\u0131": "i",  # dotless i
    }
)


def slugify(text: str) -> str:
    """`Ünïcode Billing — API v2!` -> `unicode-billing-api-v2`, at most NAME_MAX_LENGTH long.

    Accented letters keep their base letter (NFKD, then the accents dropped); other scripts are
    left out. A library (python-slugify) would have to be installed beside the user's copier;
    this runs on what copier has.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(TRANSLITERATIONS))
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"service-{slug}"
    if len(slug) > NAME_MAX_LENGTH:
        # Cut at the last dash that keeps it short enough, so that no word is cut in half.
        cut = slug[: NAME_MAX_LENGTH + 1].rfind("-")
        slug = slug[: cut if cut > 0 else NAME_MAX_LENGTH].rstrip("-")
    return slug or "service"


TOML_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}
TOML_MUST_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def toml_string(value: str) -> str:
    """`value` as a TOML basic string: UTF-8 as it is; quotes, backslashes, controls escaped."""
    escaped = TOML_MUST_ESCAPE.sub(
        lambda match: TOML_ESCAPES.get(match[0], f"\\u{ord(match[0]):04X}"), value
    )
    return f'"{escaped}"'


def is_one_line(text: str) -> bool:
    """Whether `text` has no line break nor other control character (a tab, a CR, U+2028...).

    Such a character breaks the package metadata (`Summary:`, `Author-email:` are header lines)
    or the README heading.
    """
    return not any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in text)


def has_ascii_local_part(address: str) -> bool:
    """Whether the part before the last @ is ASCII: package metadata cannot carry any other."""
    return address.rpartition("@")[0].isascii()


def is_package_email(address: str) -> bool:
    """Whether Python package metadata takes `address` as it is.

    Build backends (hatchling) read `project.authors` with the standard library's parser, which
    refuses what RFC 5322 does (`a..b@x.com`, quotes, commas) and drops comments (`a(b)@x.com`).
    """
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, MessageError):
        return False
    return parsed.addr_spec == address


def is_reserved_name(name: str) -> bool:
    """A package name that would shadow a keyword or a standard library module."""
    return keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in sys.stdlib_module_names


BASE_DEPENDENCIES = [
    # 0.165: features.add_routes passes on every option a path operation has (form limits).
    "fastapi>=0.165",
    "pydantic>=2.10",
    "pydantic-settings>=2.7",
    "starlette>=0.40",
]
# The server `python -m <package>` runs (server.py), with uvloop for its event loop.
SERVER_DEPENDENCIES = {"granian": "granian[uvloop]>=2.5", "uvicorn": "uvicorn[standard]>=0.30"}
DATABASE_DEPENDENCIES = ["alembic>=1.14", "anyio>=4.6", "sqlalchemy[asyncio]>=2.0.43"]
DATABASE_DRIVERS = {
    "sqlite": "aiosqlite>=0.20",
    "postgresql": "asyncpg>=0.30",
    # asyncmy over aiomysql: faster in the benchmark, and a read timeout bounds a statement.
    "mysql": "asyncmy>=0.2.18",
}
# Tracing: the SDK and its OTLP/HTTP exporter, and the instrumentation of each library the
# service uses (tracing.py switches on those installed; its request spans are its own).
TRACING_DEPENDENCIES = [
    "opentelemetry-api>=1.45",
    "opentelemetry-exporter-otlp-proto-http>=1.45",
    "opentelemetry-sdk>=1.45",
    "opentelemetry-semantic-conventions>=0.66b1",
    "opentelemetry-util-http>=0.66b1",
    "packaging>=24",
]
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
    deps = [*BASE_DEPENDENCIES, SERVER_DEPENDENCIES[answers["server"]]]
    if answers["logging"] == "structlog":
        deps += ["orjson>=3.10", "structlog>=24.4"]
    if answers["database"] != "none":
        deps += [*DATABASE_DEPENDENCIES, DATABASE_DRIVERS[answers["database"]]]
    elif answers["example_api"]:
        deps.append("anyio>=4.6")
    if answers["cache"] == "redis" or answers["rate_limit"]:
        deps.append("redis>=5.2")
    if answers["auth"] == "jwt":
        deps.append("pyjwt>=2.10")
    if answers["auth"] == "oidc":
        # The provider's keys are fetched with httpx, never with PyJWT's blocking client;
        # dev_auth.py makes the keys of a local provider with cryptography.
        deps += ["cryptography>=43", "httpx>=0.27", "pyjwt[crypto]>=2.10"]
    if answers["rate_limit"]:
        deps.append("limits>=5.0")
    if answers["http_client"]:
        deps.append("httpx>=0.27")
    if answers["metrics"]:
        deps += ["anyio>=4.6", "prometheus-client>=0.21"]
    if answers["tracing"]:
        deps += TRACING_DEPENDENCIES
        # Every Redis client (the cache's, the rate limiter's, the job queue's) and every httpx
        # client (the outbound one, the identity provider's keys) is traced.
        if answers["cache"] == "redis" or answers["rate_limit"] or jobs_on(answers):
            deps.append("opentelemetry-instrumentation-redis>=0.66b1")
        if answers["http_client"] or answers["auth"] == "oidc":
            deps.append("opentelemetry-instrumentation-httpx>=0.66b1")
    if jobs_on(answers):
        # SAQ runs the jobs on Redis; the service opens the Redis client itself (timeouts). The
        # worker serves its health checks with uvicorn, in the loop that runs the jobs.
        deps += ["redis>=5.2", "saq[redis]>=0.26", SERVER_DEPENDENCIES["uvicorn"]]
    if answers["error_reporting"] == "sentry":
        # anyio: shutdown waits for the SDK's last sends in a worker thread.
        deps += ["anyio>=4.6", "sentry-sdk>=3.0"]
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
    if answers["database"] in ("postgresql", "mysql"):
        # The suite runs on a throw-away SQLite file too, when no database server is at hand.
        deps.append(DATABASE_DRIVERS["sqlite"])
    if answers["example_api"]:
        # tests/test_api_fuzz.py: the API checked against its own OpenAPI schema.
        deps.append("schemathesis>=4.30")
    return sorted(deps)


# Top-level modules that a generated project's environment can hold: those of every dependency
# the functions above can declare, of what they pull in, and of the dev tools. A package named
# like one of them is shadowed by it (`python -m fastapi` runs FastAPI's command line) or breaks
# it. tests/test_answers.py holds this set to what the fullest variant installs.
INSTALLED_MODULES = frozenset(
    {
        # The service's dependencies and theirs.
        "aiosqlite", "alembic", "annotated_doc", "annotated_types", "anyio", "asyncpg", "certifi",
        "click", "dotenv", "fastapi", "fastapi_offline", "greenlet", "h11", "httpcore",
        "httptools", "httpx", "idna", "jwt", "mako", "markupsafe", "orjson", "prometheus_client",
        "pydantic", "pydantic_core", "pydantic_settings", "redis", "sqlalchemy", "starlette",
        "structlog", "typing_extensions", "typing_inspection", "uvicorn", "uvloop", "watchfiles",
        "granian",
        "websockets", "yaml", "_yaml",
        # Jobs (SAQ) and tracing (OpenTelemetry) bring these.
        "asgiref", "croniter", "dateutil", "google", "saq", "tzdata", "wrapt",
        # The dev tools and theirs.
        "ast_serialize", "charset_normalizer", "deptry", "graphql", "harfile", "hypothesis",
        "hypothesis_graphql", "iniconfig", "jsonschema_rs", "librt", "markdown_it", "mdurl",
        "mypy", "mypy_extensions", "mypyc", "opentelemetry", "packaging", "pathspec", "pluggy",
        "py", "pygments", "pyrate_limiter", "pytest", "pytest_asyncio", "requests",
        "requirements", "rich", "ruff", "schemathesis", "sortedcontainers", "tomli", "urllib3",
        "werkzeug", "_hypothesis_ftz_detector", "_hypothesis_globals", "_hypothesis_pytestplugin",
        "_pytest",
        # Modules the template is adding (jobs, rate limiting, OpenID Connect; tracing's
        # opentelemetry is above): refused now, so that no service generated today has to
        # rename its package on `copier update`.
        "cryptography", "limits", "taskiq",
        # And those of error reporting and MySQL.
        "sentry_sdk", "asyncmy", "aiomysql", "pymysql",
        # The project's own test package and pytest's per-folder plugins.
        "conftest", "tests",
    }
)  # fmt: skip


def shadows_installed_module(name: str) -> bool:
    """A package name that an installed module, or the project's tests, already use."""
    return name in INSTALLED_MODULES


# The answers that the derived values read.
ANSWERS_USED = {
    "python_version",
    "server",
    "logging",
    "database",
    "cache",
    "example_api",
    "auth",
    "http_client",
    "metrics",
    "tracing",
    "error_reporting",
    "docs",
    "rate_limit",
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
    "mysql": "mysql+asyncmy://root@127.0.0.1:3306/{package}",
}


def server_loggers_for(answers: dict[str, Any]) -> list[str]:
    """The loggers of the servers the service runs, routed through its own log pipeline."""
    loggers = {"granian": ["_granian"], "uvicorn": ["uvicorn", "uvicorn.error"]}[answers["server"]]
    if jobs_on(answers) and answers["server"] != "uvicorn":
        loggers += ["uvicorn", "uvicorn.error"]  # the jobs worker's health checks
    return loggers


def features_for(answers: dict[str, Any]) -> list[str]:
    """The modules that bring routes, error handlers or start-up checks, as main.py lists them.

    What the service opens is main.py's `open_resources`, and its middleware main.py's
    `middleware`: neither follows this list.
    """
    features = ["logging", "errors"]
    if answers["error_reporting"] == "sentry":
        features.append("error_reporting")
    if answers["tracing"]:
        features.append("tracing")
    if answers["database"] != "none":
        features.append("db")
    if answers["cache"] == "redis":
        features.append("redis_cache")
    if answers["auth"] != "none":
        features.append("security")
    if answers["metrics"]:
        features.append("metrics")
    if answers["rate_limit"]:
        features.append("rate_limit")
    if jobs_on(answers):
        features.append("jobs")
    return [*features, "health", "docs"]


def resources_for(answers: dict[str, Any]) -> list[dict[str, str]]:
    """The fields of resources.py's `Resources`, in the order main.py opens them: the field,
    the module and type that it holds, and `checked` when /health/ready checks it."""
    resources = [{"field": "settings", "module": "config", "type": "Settings"}]
    if answers["database"] != "none":
        resources.append({"field": "database", "module": "db", "type": "Database", "checked": "1"})
    if answers["cache"] != "none":
        resources.append({"field": "cache", "module": "cache", "type": "Cache", "checked": "1"})
    if answers["auth"] != "none":
        resources.append(
            {
                "field": "token_verifier",
                "module": "security",
                "type": "TokenVerifier",
                "checked": "1",
            }
        )
    if answers["http_client"]:
        resources.append({"field": "http_client", "module": "http_client", "type": "HttpClient"})
    if answers["rate_limit"]:
        resources.append(
            {"field": "rate_limiter", "module": "rate_limit", "type": "RateLimiter", "checked": "1"}
        )
    if jobs_on(answers):
        resources.append({"field": "jobs", "module": "jobs", "type": "Jobs", "checked": "1"})
    if answers["example_api"]:
        resources.append({"field": "streams", "module": "streaming", "type": "StreamSlots"})
        resources.append(
            {"field": "products", "module": "products.service", "type": "ProductService"}
        )
    return resources


def settings_mixins_for(answers: dict[str, Any]) -> list[dict[str, str]]:
    """The settings classes that config.py combines into `Settings`, most specific first: the
    team's own (domain_settings.py) before every feature's."""
    mixins = [{"module": "domain_settings", "settings": "DomainSettings"}]
    if answers["database"] != "none":
        mixins.append({"module": "db", "settings": "DatabaseSettings"})
    if answers["cache"] == "memory":
        mixins.append({"module": "cache", "settings": "MemoryCacheSettings"})
    if answers["cache"] == "redis":
        mixins.append({"module": "redis_cache", "settings": "RedisSettings"})
    if answers["auth"] == "jwt":
        mixins.append({"module": "security", "settings": "JwtSettings"})
    if answers["auth"] == "oidc":
        mixins.append({"module": "security", "settings": "OidcSettings"})
    if answers["http_client"]:
        mixins.append({"module": "http_client", "settings": "HttpClientSettings"})
    if answers["tracing"]:
        mixins.append({"module": "tracing", "settings": "TracingSettings"})
    if answers["rate_limit"]:
        mixins.append({"module": "rate_limit", "settings": "RateLimitSettings"})
    if jobs_on(answers):
        mixins.append({"module": "jobs", "settings": "JobsSettings"})
    if answers["example_api"]:
        mixins.append({"module": "streaming", "settings": "StreamingSettings"})
    if answers["metrics"]:
        mixins.append({"module": "metrics", "settings": "MetricsSettings"})
    mixins.append({"module": "server", "settings": "ServerSettings"})
    return [*mixins, {"module": "settings", "settings": "CoreSettings"}]


def fixture_modules_for(answers: dict[str, Any]) -> list[dict[str, Any]]:
    """The generated tests/fixtures/ modules; `settings`: it gives the app settings under test."""
    fixtures = []
    if answers["database"] != "none":
        fixtures.append({"module": "database", "settings": True})
    if answers["cache"] == "redis" or answers["rate_limit"]:
        # APP_REDIS_URL, shared by the cache and the rate limit.
        fixtures.append({"module": "redis", "settings": True})
    if answers["cache"] != "none":
        fixtures.append({"module": "cache", "settings": answers["cache"] == "redis"})
    if answers["rate_limit"]:
        fixtures.append({"module": "rate_limit", "settings": True})
    if answers["tracing"]:
        fixtures.append({"module": "tracing", "settings": False})
    if jobs_on(answers):
        fixtures.append({"module": "jobs", "settings": True})
    if answers["error_reporting"] == "sentry":
        fixtures.append({"module": "error_reporting", "settings": False})
    # With OpenID Connect the app under test trusts a local identity provider.
    return [*fixtures, {"module": "auth", "settings": answers["auth"] == "oidc"}]


def server_variables_for(answers: dict[str, Any]) -> list[str]:
    """The variables naming the real servers the generated suite tests against when set."""
    servers = []
    if answers["database"] == "postgresql":
        servers.append("TEST_POSTGRES_URL")
    if answers["database"] == "mysql":
        servers.append("TEST_MYSQL_URL")
    if answers["cache"] == "redis" or answers["rate_limit"] or jobs_on(answers):
        servers.append("TEST_REDIS_URL")
    return servers


class GitConfigExtension(Extension):
    """Filters used by the questions' defaults and validators."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["git_config"] = git_config
        environment.filters["slugify"] = slugify
        environment.filters["toml_string"] = toml_string
        environment.filters["is_one_line"] = is_one_line
        environment.filters["has_ascii_local_part"] = has_ascii_local_part
        environment.filters["is_package_email"] = is_package_email
        environment.filters["is_reserved_name"] = is_reserved_name
        environment.filters["shadows_installed_module"] = shadows_installed_module


REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?P<extras>\[[^\]]*\])?(?P<versions>.*)$")


def requirement_names(requirements: list[str]) -> list[str]:
    """The names (with extras) that `dependencies` lists: the versions go to the floors."""
    matches = [REQUIREMENT.match(requirement) for requirement in requirements]
    return sorted({m["name"] + (m["extras"] or "") for m in matches if m})


def requirement_floors(requirements: list[str]) -> list[str]:
    """The versions each dependency needs, one line per package, for `constraint-dependencies`.

    Kept apart from the lists a team's `uv add` writes to, so that a floor the template raises
    on `copier update` never touches a line of theirs.
    """
    matches = [REQUIREMENT.match(requirement) for requirement in requirements]
    return sorted({m["name"] + m["versions"] for m in matches if m and m["versions"]})


class ContextUpdater(ContextHook):
    """Values derived from the answers, computed in one place for every template file."""

    def hook(self, context: dict[str, Any]) -> None:
        # The hook also runs while copier prompts, before (some of) the answers exist.
        if not ANSWERS_USED.issubset(context):
            return
        runtime, dev = dependencies_for(context), dev_dependencies_for(context)
        context["dependencies"] = requirement_names(runtime)
        context["dev_dependencies"] = requirement_names(dev)
        context["dependency_floors"] = requirement_floors([*runtime, *dev])
        context["python_floor"] = context["python_version"].replace(".", "")
        context["ci_python_versions"] = ci_python_versions(context["python_version"])
        context["secret_key"] = secrets.token_urlsafe(48)
        context["metrics_token"] = secrets.token_urlsafe(32)
        context["server_loggers"] = server_loggers_for(context)
        context["features"] = features_for(context)
        context["settings_mixins"] = settings_mixins_for(context)
        context["resources"] = resources_for(context)
        context["test_fixtures"] = fixture_modules_for(context)
        context["test_servers"] = server_variables_for(context)
        if context.get("_copier_phase") != "prompt":
            # While copier checks the answers, `jobs` is the answer given (`--data jobs=true`),
            # so that its validator refuses it without a database; copier keeps a given answer
            # to a question it skips, so from then on `jobs` says whether jobs are on.
            context["jobs"] = jobs_on(context)
        if context["database"] != "none":
            context["default_database_url"] = DEFAULT_DATABASE_URLS[context["database"]].format(
                slug=context["project_slug"], package=context["package_name"]
            )
