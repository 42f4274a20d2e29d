"""The shape of the generated service: hubs that list features, a domain without switches, and
resources that reach routes through typed dependencies, not the app's untyped state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Projects
from support import TEMPLATE_DIR, Variant
from variants import FULL

SKELETON = TEMPLATE_DIR / "template"
HUBS = ("main.py", "config.py", "conftest.py")
MAX_HUB_CONDITIONALS = 12
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
    assert all(count <= MAX_HUB_CONDITIONALS for count in counts.values()), counts


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
    assert set(uses) <= {"main.py", "features.py"}
    assert sum(uses.values()) <= 4
