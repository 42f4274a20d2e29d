"""Where a rendered service's code reaches into a dependency's internals.

Run with the service's own interpreter (`python -c "$(cat this file)" src <package>`), so that a
class from a dependency can be imported and asked whether a method is its own. Prints one line
per finding, `path:line: what`, and exits 1 when there is any:
- an import of an underscored module or name from any package but the service's;
- an assignment to an attribute a framework owns and builds itself (`app.middleware_stack`), or to
  an underscored attribute of an object other than `self`;
- a subclass of a server's connection protocol class;
- a method of a subclass that overrides an underscored method of its base from a dependency;
- a hand copy of an object's fields into a call, one keyword argument each.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

FRAMEWORK_OWNED_ATTRIBUTES = frozenset(
    {"middleware_stack", "user_middleware", "router", "routes", "exception_handlers"}
)
SERVER_PROTOCOL_CLASSES = frozenset({"HttpToolsProtocol", "H11Protocol", "WebSocketProtocol"})
# This many keyword arguments, each the same-named attribute of one object, are a hand copy.
HAND_COPY_FIELDS = 5


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imported_names(tree: ast.Module, package: str) -> dict[str, str]:
    """Local name -> the dotted path it was imported from, for imports from other packages."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != package:
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != package:
                    names[alias.asname or alias.name.split(".")[0]] = alias.name
    return names


def resolve(dotted: str) -> object | None:
    """The object at a dotted path, importing the longest module prefix that imports."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute, None)
        return found
    return None


def private_imports(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in {package, "__future__"}:
                continue
            names = [alias.name for alias in node.names]
            if any(map(is_private, [*node.module.split("."), *names])):
                found.append((node.lineno, f"from {node.module} import {', '.join(names)}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != package and any(map(is_private, parts)):
                    found.append((node.lineno, f"import {alias.name}"))
    return found


def owned_assignments(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Attribute):
                continue
            owner_is_self = isinstance(target.value, ast.Name) and target.value.id in {
                "self",
                "cls",
            }
            if target.attr in FRAMEWORK_OWNED_ATTRIBUTES or (
                is_private(target.attr) and not owner_is_self
            ):
                found.append((node.lineno, f"assigns {ast.unparse(target)}"))
    return found


def subclass_internals(tree: ast.Module, outside: dict[str, str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            written = ast.unparse(base).split("[")[0]
            if written.split(".")[-1] in SERVER_PROTOCOL_CLASSES:
                found.append((node.lineno, f"class {node.name} subclasses a server's protocol"))
            head, _, rest = written.partition(".")
            if head not in outside:
                continue
            base_class = resolve(f"{outside[head]}.{rest}" if rest else outside[head])
            for item in node.body:
                is_method = isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                if is_method and is_private(item.name) and hasattr(base_class, item.name):
                    found.append(
                        (item.lineno, f"{node.name}.{item.name} overrides a private method")
                    )
    return found


def hand_copies(tree: ast.Module) -> list[tuple[int, str]]:
    """Calls that pass an object's fields on one by one (`path=route.path, tags=route.tags, ...`):
    a field the framework adds later is silently dropped."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        copied = [
            keyword.arg
            for keyword in node.keywords
            if isinstance(keyword.value, ast.Attribute) and keyword.value.attr == keyword.arg
        ]
        if len(copied) >= HAND_COPY_FIELDS:
            found.append(
                (node.lineno, f"copies {len(copied)} fields by hand ({', '.join(copied[:3])}, ...)")
            )
    return found


def scan(path: Path, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    outside = imported_names(tree, package)
    return sorted(
        [
            *private_imports(tree, package),
            *owned_assignments(tree),
            *subclass_internals(tree, outside),
            *hand_copies(tree),
        ]
    )


def main(source: str, package: str) -> int:
    sys.path.insert(0, source)
    findings = [
        f"{path}:{line}: {what}"
        for path in sorted(Path(source).rglob("*.py"))
        for line, what in scan(path, package)
    ]
    if findings:
        print("\n".join(findings))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
