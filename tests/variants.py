"""The combinations of answers that the tests render. Each one runs every static and suite check.

Named presets, plus a pairwise set: every pair of values of any two questions with choices is
rendered together in at least one variant (allpairspy, deterministic for a fixed input order; the
ids must be identical in every xdist worker). The set is built in two steps so that every pair
of the module questions runs its own test suite on the default Python (the floor that every
machine has), then a few rows add the pairs of `python_version` 3.12 and 3.13 with every value:
those get the static checks for their target everywhere, and their suite wherever an interpreter
of that version is installed (the template's CI).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

from allpairspy import AllPairs
from support import Variant, choices, questions

PAIRWISE_QUESTIONS = (
    "python_version",
    "server",
    "database",
    "cache",
    "logging",
    "auth",
    "example_api",
    "http_client",
    "metrics",
    "tracing",
    "error_reporting",
    "docs",
    "rate_limit",
    "jobs",
    "deployment",
    "ci",
)

# Short names for readable ids; a value missing here reads `<question>-<value>`.
SHORT_NAMES: dict[str, dict[object, str]] = {
    "python_version": {"3.11": "py311", "3.12": "py312", "3.13": "py313"},
    "server": {"granian": "granian", "uvicorn": "uvicorn"},
    "database": {"none": "nodb", "sqlite": "sqlite", "postgresql": "pg", "mysql": "mysql"},
    "cache": {"none": "nocache", "memory": "memcache", "redis": "redis"},
    "logging": {"structlog": "structlog", "stdlib": "stdlib"},
    "auth": {"none": "noauth", "jwt": "jwt", "oidc": "oidc"},
    "example_api": {True: "api", False: "noapi"},
    "http_client": {True: "http", False: "nohttp"},
    "metrics": {True: "metrics", False: "nometrics"},
    "tracing": {True: "tracing", False: "notracing"},
    "error_reporting": {"none": "noreporting", "sentry": "sentry"},
    "docs": {"cdn": "cdn", "self_hosted": "selfdocs"},
    "rate_limit": {True: "ratelimit", False: "noratelimit"},
    "jobs": {True: "jobs", False: "nojobs"},
    "deployment": {"none": "nodeploy", "docker": "docker", "kubernetes": "k8s"},
    "ci": {"github": "gh", "gitlab": "gitlab", "none": "noci"},
}


def possible(answers: Mapping[str, object]) -> bool:
    """Whether copier.yml allows these answers (some or all): `jobs` needs the products API and
    a database, so it is never asked without them."""
    return not (
        answers.get("jobs") is True
        and (answers.get("example_api") is False or answers.get("database") == "none")
    )


DEFAULT = Variant("default")
# The default service on the other server: the runtime and fault tests run on both.
UVICORN = Variant("uvicorn", {"server": "uvicorn"})
STDLIB_LOGGING = Variant("stdlib-logging", {"logging": "stdlib"})
# Presets for the data modules (each with the products API; `full` has PostgreSQL and Redis),
# and lean variants that the runtime tests start as processes. The pairwise set covers the rest.
# On uvicorn: the database's fault and start-up tests run on both servers (DEFAULT, FULL: Granian).
POSTGRES_MEMORY = Variant(
    "postgresql-memory", {"database": "postgresql", "cache": "memory", "server": "uvicorn"}
)
# MySQL (tested on MariaDB) with Redis: its fault, start-up and container tests run on it.
MYSQL_REDIS = Variant("mysql-redis", {"database": "mysql", "cache": "redis"})
SQLITE_REDIS = Variant("sqlite-redis", {"database": "sqlite", "cache": "redis"})
METRICS = Variant("metrics", {"metrics": True})
# The rate limit's runtime test starts it with two workers sharing Redis.
RATE_LIMIT = Variant(
    "rate-limit", {"rate_limit": True, "database": "none", "cache": "none", "server": "uvicorn"}
)
# The same on Granian: who may name the client (X-Forwarded-For) is tested on both servers.
RATE_LIMIT_GRANIAN = Variant(
    "rate-limit-granian", {"rate_limit": True, "database": "none", "cache": "none"}
)
TRACING = Variant("tracing", {"tracing": True})
# Reporting to a receiver the runtime test runs; that test adds a failing route to its render, so
# no other test uses it.
ERROR_REPORTING = Variant("error-reporting", {"error_reporting": "sentry"})
# Jobs on PostgreSQL with a Redis broker: the runtime tests run its API and its workers.
JOBS = Variant("jobs-postgresql", {"jobs": True, "database": "postgresql"})
# With auth, so the offline Swagger UI has an Authorize button to show.
SELF_HOSTED_DOCS = Variant("self-hosted-docs", {"docs": "self_hosted", "auth": "jwt"})
MINIMAL = Variant(
    "minimal",
    {
        "database": "none",
        "cache": "none",
        "auth": "none",
        "example_api": False,
        "http_client": False,
        "metrics": False,
        "deployment": "none",
        "ci": "none",
    },
)
FULL = Variant(
    "full",
    {
        "database": "postgresql",
        "cache": "redis",
        "auth": "jwt",
        "example_api": True,
        "http_client": True,
        "metrics": True,
        "tracing": True,
        "error_reporting": "sentry",
        "docs": "self_hosted",
        "jobs": True,
        "deployment": "kubernetes",
        "ci": "github",
    },
)
PRESETS = [
    DEFAULT,
    UVICORN,
    STDLIB_LOGGING,
    MINIMAL,
    FULL,
    POSTGRES_MEMORY,
    MYSQL_REDIS,
    SQLITE_REDIS,
    METRICS,
    RATE_LIMIT,
    TRACING,
    SELF_HOSTED_DOCS,
    JOBS,
]


def values_of(question: str) -> list[object]:
    return choices(questions()[question])


def complete_answers(answers: Mapping[str, object]) -> dict[str, object]:
    """A variant's answers for every pairwise question, the template's defaults filling gaps."""
    return {q: answers.get(q, questions()[q]["default"]) for q in PAIRWISE_QUESTIONS}


def variant_id(index: int, answers: Mapping[str, object]) -> str:
    """`pw03-py312-pg-redis-jwt`: the row number, then every value that differs from the default."""
    changed = [
        SHORT_NAMES.get(q, {}).get(value, f"{q}-{value}")
        for q, value in answers.items()
        if value != questions()[q]["default"]
    ]
    return "-".join([f"pw{index:02d}", *changed])


def pairwise_rows(
    names: Sequence[str], tested: Iterable[Mapping[str, object]]
) -> list[dict[str, object]]:
    """Rows covering every possible pair of values of `names` that `tested` does not cover yet."""
    previously = [[row[q] for q in names] for row in tested]
    parameters = [values_of(q) for q in names]

    def allowed(row: Sequence[object]) -> bool:
        # allpairspy builds rows left to right: `row` may hold the first values only.
        return possible(dict(zip(names, row, strict=False)))

    rows = [
        dict(zip(names, row, strict=True))
        for row in AllPairs(parameters, filter_func=allowed, previously_tested=previously)
    ]
    return rows + missing_pair_rows(names, [*tested, *rows])


def missing_pair_rows(
    names: Sequence[str], tested: Iterable[Mapping[str, object]]
) -> list[dict[str, object]]:
    """Rows for the possible pairs that allpairspy left out.

    With a filter it can stop before it has covered every allowed pair (it counts the forbidden
    ones as still to find). Each missing pair goes into the first extra row that can take it;
    the other answers are the defaults.
    """
    covered = {
        ((a, row[a]), (b, row[b])) for row in tested for a, b in itertools.combinations(names, 2)
    }
    extra: list[tuple[dict[str, object], set[str]]] = []
    for a, b in itertools.combinations(names, 2):
        for va, vb in itertools.product(values_of(a), values_of(b)):
            if ((a, va), (b, vb)) in covered or not possible({a: va, b: vb}):
                continue
            for row, fixed in extra:
                fits = all(q not in fixed or row[q] == v for q, v in ((a, va), (b, vb)))
                if fits and possible({**row, a: va, b: vb}):
                    break
            else:
                row, fixed = {q: questions()[q]["default"] for q in names}, set()
                extra.append((row, fixed))
            row.update({a: va, b: vb})
            fixed.update({a, b})
    return [row for row, _ in extra]


def pairwise_variants() -> list[Variant]:
    tested = [complete_answers(v.answers) for v in PRESETS]
    floor = questions()["python_version"]["default"]
    # Step 1: every pair of the module questions, on the default Python.
    modules = [q for q in PAIRWISE_QUESTIONS if q != "python_version"]
    rows = [{"python_version": floor, **row} for row in pairwise_rows(modules, tested)]
    # Step 2: the pairs of the other Python versions with every value.
    rows += pairwise_rows(PAIRWISE_QUESTIONS, tested + rows)
    return [Variant(variant_id(index, row), row) for index, row in enumerate(rows, start=1)]


PAIRWISE = pairwise_variants()
VARIANTS = [*PRESETS, *PAIRWISE]
