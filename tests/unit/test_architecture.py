"""The package's shape: no import cycle, no module over 400 lines, and a core that
imports neither Celery nor Flask (read from the source, so nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "maintenance_guard"
MAX_LINES = 400
# The core: values, policy, state and the services built on it.
CORE = (
    "changes",
    "errors",
    "events",
    "guard",
    "impact",
    "inputs",
    "modes",
    "records",
    "settings",
    "snapshot",
    "state",
    "status",
    "store",
    "tally",
    "watcher",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Package modules ``module`` imports at run time (module or function level);
    imports under ``if TYPE_CHECKING:`` are left out."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")
                if child.level:
                    base = base[: len(base) - child.level + 1]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in child.names]
                found.update(c for c in candidates if c in MODULES)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in MODULES)
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _cycles() -> list[list[str]]:
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and len(path) > 1:
                    cycles.append(path)
                elif nxt not in path and nxt > start:  # each cycle once, from its least node
                    stack.append((nxt, [*path, nxt]))
    return cycles


def test_no_import_cycle_in_the_package() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_neither_celery_nor_flask(core: str) -> None:
    module = f"maintenance_guard.{core}"
    names = [m for m in MODULES if m == module or m.startswith(module + ".")]
    for name in names:
        tree = ast.parse(MODULES[name].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & {"celery", "kombu", "flask"}, f"{name} imports {roots}"
        assert not _imports(name, MODULES[name]) & {
            m
            for m in MODULES
            if m.startswith(("maintenance_guard.celery", "maintenance_guard.flask"))
        }, name
