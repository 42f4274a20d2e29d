"""The shape of the generated service: hubs that list features, a domain without switches,
resources opened in main.py as the typed fields of one object, middleware listed there in
request order, and a core that names no optional feature."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import Projects
from support import TEMPLATE_DIR, Variant
from variants import FULL

SKELETON = TEMPLATE_DIR / "template"
HUBS = ("main.py", "config.py", "conftest.py")
MAX_HUB_CONDITIONALS = 12
# main.py names each resource it opens and each middleware, one wiring line per feature: more
# switches, for a rendered file that reads top to bottom.
MAX_MAIN_CONDITIONALS = 40
# The service's core: what every service has, whatever the answers.
CORE = ("features.py", "resources.py", "settings.py", "errors.py", "openapi.py", "middleware.py")
# Modules that only some answers render.
OPTIONAL = {
    "db",
    "cache",
    "redis_cache",
    "redis_client",
    "security",
    "http_client",
    "rate_limit",
    "jobs",
    "streaming",
    "tracing",
    "metrics",
    "products",
    "docs",
    "worker",
}
# The middleware of the full service (which has no rate limit), outermost first.
REQUEST_ORDER = [
    "unhandled_errors",
    "tracing_middleware",
    "request_context",
    "head_size_limit",
    "concurrency_limit",
    "metrics_middleware",
    "cors",
    "body_limit",
]
CONDITIONAL = re.compile(r"\{%-?\s*(if|elif)\b")
STATE = re.compile(r"\.state\.")


def template_files(name: str) -> list[Path]:
    """The skeleton's files whose rendered name is `name`."""
    return [
        path
        for path in SKELETON.rglob("*")
        if path.is_file() and re.sub(r"\{%.*?%\}|\.jinja$", "", path.name) == name
    ]


def conditionals(path: Path) -> int:
    return len(CONDITIONAL.findall(path.read_text()))


def test_hubs_list_features_with_few_conditionals() -> None:
    counts = {
        str(path.relative_to(SKELETON)): conditionals(path)
        for hub in HUBS
        for path in template_files(hub)
    }
    print("\ninline {% if/elif %} per hub:", *(f"{n}: {c}" for n, c in counts.items()), sep="\n  ")
    assert len(counts) == len(HUBS)
    caps = {
        name: MAX_MAIN_CONDITIONALS if "main.py" in name else MAX_HUB_CONDITIONALS
        for name in counts
    }
    assert all(count <= caps[name] for name, count in counts.items()), counts


def test_the_products_domain_holds_no_feature_switch() -> None:
    domain = next(SKELETON.rglob("*products{% endif %}"))
    switched = {
        str(path.relative_to(domain)): conditionals(path)
        for path in domain.rglob("*")
        if path.is_file() and conditionals(path)
    }
    assert switched == {}


@pytest.mark.parametrize("variant", [FULL.param()])
def test_only_the_composition_root_touches_app_state(projects: Projects, variant: Variant) -> None:
    source = projects.rendered(variant) / "src" / variant.package
    uses = {
        str(path.relative_to(source)): len(STATE.findall(path.read_text()))
        for path in source.rglob("*.py")
        if STATE.search(path.read_text())
    }
    print(f"\n.state. uses in {variant.id}: {uses}")
    assert set(uses) <= {"main.py", "resources.py"}
    assert sum(uses.values()) <= 2


def runtime_imports(path: Path) -> set[str]:
    """The package modules `path` imports when it runs (imports for type checking left out)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    modules = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                modules.add(node.module.split(".")[0])
            else:
                modules.update(alias.name for alias in node.names)
    return modules


@pytest.mark.parametrize("variant", [FULL.param()])
def test_no_runtime_locator_and_a_core_that_names_no_feature(
    projects: Projects, variant: Variant
) -> None:
    source = projects.rendered(variant) / "src" / variant.package
    code = {path.relative_to(source).as_posix(): path.read_text() for path in source.rglob("*.py")}
    locators = [
        name for name, text in code.items() if re.search(r"ResourceKey|\.provide\(|add_check", text)
    ]
    assert locators == []
    named = {module: runtime_imports(source / module) & OPTIONAL for module in CORE}
    print(f"\noptional modules the core imports: {named}")
    assert named == {key: set() for key in CORE}
    # One object holds what start-up opened: each resource a typed field.
    fields = re.search(r"class Resources:\n((?:    .*\n)+)", code["resources.py"])
    assert fields is not None
    assert "database: Database" in fields.group(1)
    assert "cache: Cache" in fields.group(1)


@pytest.mark.parametrize("variant", [FULL.param()])
def test_the_middleware_order_is_stated_once_in_main(projects: Projects, variant: Variant) -> None:
    source = projects.rendered(variant) / "src" / variant.package
    main = (source / "main.py").read_text()
    listed = re.findall(r"Middleware\((\w+), settings\)", main)
    assert listed == REQUEST_ORDER
    elsewhere = {
        path.name
        for path in source.rglob("*.py")
        if path.name not in ("main.py", "worker.py")
        and re.search(r"add_middleware|Middleware\(\w+, settings\)|Layer\.", path.read_text())
    }
    assert elsewhere == set()
