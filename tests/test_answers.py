"""Layer 1, deeper: every answer the validators accept renders a project that installs.

The derived names and the strings written into `pyproject.toml` come from the template's
extension (`extensions/context.py`), tested here directly; then odd but legal answers are drawn
(hypothesis) and each one is rendered with copier as a user runs it: an accepted one must install
with uv and carry its answers into the package metadata, a refused one must leave no folder.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import Projects
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from support import TEMPLATE_DIR, Variant, clean_env, run
from test_questions import copier_copy
from variants import FULL, MINIMAL


def load_context() -> ModuleType:
    """extensions/context.py, loaded by path as copier loads it."""
    spec = importlib.util.spec_from_file_location(
        "context", TEMPLATE_DIR / "extensions" / "context.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


context = load_context()
LIMIT = context.NAME_MAX_LENGTH


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Ünïcode Billing — API v2!", "unicode-billing-api-v2"),
        ("Straße Ærøskøbing Łódź Þór", "strasse-aeroskobing-lodz-thor"),
        (
            "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01le \u00b2",
            "fullwidth-file-2",
        ),
        ("Crème brûlée façade naïve", "creme-brulee-facade-naive"),
        ("9 Lives", "service-9-lives"),
        ("Сервис", "service"),
        ("  --  ", "service"),
    ],
)
def test_slug_transliterates_accented_letters(name: str, slug: str) -> None:
    assert context.slugify(name) == slug


def test_long_slug_is_cut_at_a_dash_within_the_limit() -> None:
    name = "Accounts Receivable Reconciliation and Dunning Orchestrator"  # 59 characters
    slug = context.slugify(name)
    assert slug == "accounts-receivable-reconciliation-and-dunning"
    assert len(slug) <= LIMIT
    # One NFKD character can become many: U+FDFA decomposes into 18 Arabic letters, U+3371 into
    # "hPa". Whatever the name, the slug stays within the limit.
    assert len(context.slugify("\u3371" * 60)) <= LIMIT


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_toml_string_reads_back_as_the_same_text(value: str) -> None:
    written = context.toml_string(value)
    assert tomllib.loads(f"value = {written}")["value"] == value
    # Printable characters are written as they are (UTF-8), never as \u escapes.
    printable = [c for c in value if c.isprintable() and c not in '"\\']
    assert all(c in written for c in printable)


def test_unicode_answers_reach_pyproject_as_utf8_toml(tmp_path: Path) -> None:
    destination = tmp_path / "service"
    answers = {
        "project_name": "Ünïcode Billing — API v2!",
        "description": 'Factures «rapides» for Zoë: "quoted", back\\slash, 🚀 and ß',
        "author_name": "Zoë Ærøskøbing-Łódź 🧑\u200d💻",
        "author_email": "zoe+bill@exämple.com",
    }
    result = copier_copy(destination, *(f"{name}={value}" for name, value in answers.items()))
    assert result.returncode == 0, result.stderr
    text = (destination / "pyproject.toml").read_text(encoding="utf-8")
    project = tomllib.loads(text)["project"]
    assert project["name"] == "unicode-billing-api-v2"
    assert project["description"] == answers["description"]
    assert project["authors"] == [
        {"name": answers["author_name"], "email": answers["author_email"]}
    ]
    for value in (answers["description"], answers["author_name"]):
        assert value.replace("\\", "\\\\").replace('"', '\\"') in text  # UTF-8, not \u escapes
    assert "\\u" not in text


@pytest.mark.parametrize(
    "name",
    [
        # The modules of the dependencies the template can declare, by their import names,
        "fastapi", "pydantic", "pydantic_settings", "starlette", "uvicorn", "orjson", "structlog",
        "alembic", "sqlalchemy", "asyncpg", "aiosqlite", "anyio", "redis", "jwt", "httpx",
        "prometheus_client", "fastapi_offline", "deptry", "mypy", "pytest", "pytest_asyncio",
        "ruff", "schemathesis",
        # what they pull in,
        "yaml", "hypothesis", "click", "dotenv", "uvloop", "websockets", "_pytest",
        # the modules of features on their way, and the project's own tests.
        "opentelemetry", "taskiq", "limits", "cryptography", "tests", "conftest",
    ],
)  # fmt: skip
def test_package_names_of_installed_modules_are_refused(name: str) -> None:
    assert context.shadows_installed_module(name)


def test_ordinary_package_names_are_not_refused() -> None:
    assert not any(
        context.shadows_installed_module(name)
        for name in ("my_service", "billing_api", "fastapi_billing", "redis_jobs", "unicode")
    )


LISTED_MODULES = """
import importlib.metadata, json
names = set()
for distribution in importlib.metadata.distributions():
    for path in distribution.files or []:
        top = path.parts[0]
        if len(path.parts) > 1 and not top.endswith((".dist-info", ".data")) and top != "..":
            names.add(top)
        elif len(path.parts) == 1 and path.suffix in (".py", ".so"):
            names.add(top.split(".")[0])
print(json.dumps(sorted(names)))
"""


@pytest.mark.parametrize("variant", [FULL.param()])
def test_every_module_the_fullest_variant_installs_is_a_refused_package_name(
    projects: Projects, variant: Variant
) -> None:
    project = projects.installed(variant)
    python = project / ".venv" / "bin" / "python"
    modules = json.loads(run([python, "-c", LISTED_MODULES], project).stdout)
    # mypyc's runtime modules are named by a hash that changes with each release (`<hex>__mypyc`).
    valid = [
        name
        for name in modules
        if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and not re.fullmatch(r"[0-9a-f]+__mypyc", name)
    ]
    assert {"fastapi", "yaml", "_pytest"} <= set(valid)  # packages, modules, private ones
    missing = [
        name
        for name in valid
        if name != variant.package
        and not context.is_reserved_name(name)
        and not context.shadows_installed_module(name)
    ]
    assert missing == [], f"add to INSTALLED_MODULES in extensions/context.py: {missing}"


# Odd answers, rendered and installed.

# Any character but lone surrogates (no file can hold them) and the controls that the
# validators refuse; those come in a text of their own now and then.
CHARACTERS = st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"))
CONTROLS = st.text(st.characters(categories=("Cc", "Zl", "Zp")), min_size=1, max_size=2)
ODD_TEXT = st.one_of(
    st.text(CHARACTERS, max_size=30),
    st.text(
        st.sampled_from('Zoë "Ops" \\u00e9 \' \\ <&> — 🚀 ß ﷺ \U0001f9d1\u200d\U0001f4bb'),
        max_size=30,
    ),
)
WITH_CONTROLS = st.builds("{}{}{}".format, ODD_TEXT, CONTROLS, ODD_TEXT)
GOOD_EMAILS = st.one_of(
    st.emails(),
    st.builds(
        "{}@{}.{}".format,
        st.from_regex(r"[a-z0-9]([a-z0-9+_-]|\.[a-z0-9]){0,11}", fullmatch=True),
        st.text(st.sampled_from("abzäöüß"), min_size=1, max_size=12),
        st.sampled_from(["com", "de", "co.uk", "museum"]),
    ),
)
# What the validators refuse: a non-ASCII local part, doubled dots, a comment.
BAD_EMAILS = st.sampled_from(["zoë+bill@exämple.com", "a..b@example.com", "a(b)@example.com"])


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` about four times in five: most drawn answers are accepted, some are refused."""
    return st.integers(0, 4).flatmap(lambda pick: bad if pick == 3 else good)


def long_text(size: int) -> st.SearchStrategy[str]:
    return st.text(CHARACTERS, min_size=size - 5, max_size=size).filter(str.strip)


@st.composite
def odd_answers(draw: st.DrawFn) -> dict[str, object]:
    """Identity answers at the edges of what the questions allow; every module off."""
    answers: dict[str, object] = dict(MINIMAL.answers)
    name = st.one_of(ODD_TEXT.filter(str.strip), long_text(60))
    answers["project_name"] = draw(mostly(name, long_text(61).filter(lambda t: len(t) > 60)))
    if draw(st.integers(0, 3)) == 2:
        answers["project_slug"] = draw(
            st.from_regex(r"[a-z][a-z0-9]{0,24}(-[a-z0-9]{1,12}){0,3}", fullmatch=True)
        )
    if draw(st.integers(0, 3)) == 2:
        answers["package_name"] = draw(
            mostly(
                st.from_regex(r"[a-z_][a-z0-9_]{0,49}", fullmatch=True),
                st.sampled_from(sorted(context.INSTALLED_MODULES)),
            )
        )
    description = st.one_of(ODD_TEXT, long_text(200))
    answers["description"] = draw(
        mostly(description, long_text(205).filter(lambda t: len(t) > 200))
    )
    answers["author_name"] = draw(ODD_TEXT.filter(str.strip))
    # Now and then a control character in one of the texts.
    if draw(st.integers(0, 7)) == 5:
        question = draw(st.sampled_from(["project_name", "description", "author_name"]))
        answers[question] = draw(WITH_CONTROLS)
    answers["author_email"] = draw(mostly(GOOD_EMAILS, BAD_EMAILS))
    return answers


@pytest.fixture(scope="module")
def plain_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's files outside git: copier reads them in place instead of cloning."""
    copy = tmp_path_factory.mktemp("plain") / "template"
    ignore = shutil.ignore_patterns("__pycache__", "*.py[co]", ".*_cache")
    for name in ("copier.yml", "extensions", "template"):
        source = TEMPLATE_DIR / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy / name)
    return copy


METADATA = """
import importlib.metadata, json, sys
package = __import__(sys.argv[2])
meta = importlib.metadata.metadata(sys.argv[1])
found = {"file": package.__file__, "summary": meta["Summary"], "author": meta["Author-email"]}
print(json.dumps(found))
"""


def render(template: Path, destination: Path, answers: dict[str, object]) -> tuple[int, str]:
    data = destination.parent / f"{destination.name}.yml"
    data.write_text(yaml.safe_dump(answers, allow_unicode=True))
    assert yaml.safe_load(data.read_text()) == answers
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--quiet"]
    result = subprocess.run(
        [*command, "--data-file", data, template, destination],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stderr


def test_odd_answers_either_install_or_are_refused_leaving_no_folder(
    tmp_path_factory: pytest.TempPathFactory, plain_template: Path
) -> None:
    outcomes: Counter[str] = Counter()
    # The first install fills the shared uv cache; every later one has the same dependencies.
    offline: list[str] = []
    started = time.monotonic()

    @settings(
        max_examples=10,  # each one renders and installs; raise it to search deeper
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        # Shrinking re-renders and re-installs for minutes; the failing example is shown as drawn.
        phases=[Phase.explicit, Phase.generate],
    )
    @given(answers=odd_answers())
    @example(answers={**MINIMAL.answers, "project_name": "Ünïcode Billing — API v2!"})
    @example(answers={**MINIMAL.answers, "author_email": "zoë+bill@exämple.com"})
    @example(answers={**MINIMAL.answers, "author_email": "zoe+bill@exämple.com"})
    @example(answers={**MINIMAL.answers, "package_name": "fastapi"})
    def check(answers: dict[str, Any]) -> None:
        destination = tmp_path_factory.mktemp("odd") / "service"
        status, stderr = render(plain_template, destination, answers)
        if status != 0:
            last_line = stderr.strip().splitlines()[-1]
            refusal = re.match(r"ValueError: Validation error for question '(\w+)'", last_line)
            assert refusal, stderr
            outcomes[f"refused ({refusal[1]})"] += 1
            assert not destination.exists(), "a refused answer left a folder behind"
            return
        outcomes["accepted"] += 1
        given_answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
        pyproject = tomllib.loads((destination / "pyproject.toml").read_text(encoding="utf-8"))
        project = pyproject["project"]
        assert project["name"] == given_answers["project_slug"]
        assert project["description"] == given_answers["description"]
        assert project["authors"] == [
            {"name": given_answers["author_name"], "email": given_answers["author_email"]}
        ]
        run(["uv", "sync", "--no-dev", "--quiet", *offline], destination)
        offline[:] = ["--offline"]
        python = destination / ".venv" / "bin" / "python"
        package = str(given_answers["package_name"])
        found = json.loads(
            run([python, "-c", METADATA, project["name"], package], destination).stdout
        )
        # The package imported is the project's own, not a namesake installed beside it.
        assert Path(found["file"]).is_relative_to(destination / "src")
        # A metadata header keeps no surrounding white space.
        assert (found["summary"] or "") == given_answers["description"].strip()
        assert given_answers["author_email"] in found["author"]

    check()
    refused = ", ".join(f"{n} {kind}" for kind, n in sorted(outcomes.items()) if kind != "accepted")
    print(
        f"{sum(outcomes.values())} drawn answers in {time.monotonic() - started:.0f} s: "
        f"{outcomes['accepted']} accepted (rendered, installed with uv, metadata as answered); "
        f"refused with the validator's message and no folder: {refused or 'none'}"
    )


# Every module on, in its two flavours where a question has them: the files whose lines hold the
# package name are all rendered by one of the two.
EVERY_MODULE = {
    **FULL.answers,
    "rate_limit": True,
}
EVERY_OTHER_FLAVOUR = {
    **EVERY_MODULE,
    "database": "sqlite",
    "auth": "oidc",
    "server": "uvicorn",
    "logging": "stdlib",
}
PACKAGE_NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
    st.from_regex(r"[a-z_][a-z0-9_]{0,49}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9_]{44,49}", fullmatch=True),
).filter(
    lambda name: not (context.is_reserved_name(name) or context.shadows_installed_module(name))
)


def test_every_package_name_renders_code_that_ruff_leaves_as_it_is(
    tmp_path_factory: pytest.TempPathFactory, plain_template: Path
) -> None:
    """A line that holds the package name must not be joined for a short name (a call that
    then fits on one line) nor split for a long one: `ruff format --check` and `ruff check` pass
    on the project exactly as rendered, whatever the name's length."""
    rendered: Counter[int] = Counter()

    @settings(
        max_examples=6,  # each one renders twice; the explicit examples are the edges
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.generate],
    )
    @given(package=PACKAGE_NAMES, flavour=st.sampled_from([EVERY_MODULE, EVERY_OTHER_FLAVOUR]))
    @example(package="a", flavour=EVERY_MODULE)
    @example(package="shop_api", flavour=EVERY_MODULE)
    @example(package="cart", flavour=EVERY_OTHER_FLAVOUR)
    @example(package="b" * LIMIT, flavour=EVERY_MODULE)
    @example(package="b" * LIMIT, flavour=EVERY_OTHER_FLAVOUR)
    def check(package: str, flavour: dict[str, object]) -> None:
        destination = tmp_path_factory.mktemp("named") / "service"
        answers = {**flavour, "project_name": f"Service {package}", "package_name": package}
        status, stderr = render(plain_template, destination, answers)
        assert status == 0, stderr
        # The template's own ruff, on the project's settings: no install needed.
        run([sys.executable, "-m", "ruff", "format", "--diff", "."], destination)
        run([sys.executable, "-m", "ruff", "check", "--no-fix", "."], destination)
        rendered[len(package)] += 1

    check()
    print(f"package names rendered formatted, by length: {sorted(rendered.items())}")
