"""Every gancolor module imports on its own, the package has no import cycle, and the
modules every command loads first (errors, options, commandline) stay light: no torch,
no Hydra, so a mistyped argument is reported without waiting for either."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gancolor"
LIGHT = ("gancolor.errors", "gancolor.options", "gancolor.commandline")
HEAVY = ("torch", "hydra", "omegaconf")


def module_files() -> dict[str, Path]:
    """gancolor's modules by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def gancolor_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gancolor modules `name` imports, at the top or inside a function alike: a
    deferred import only hides a cycle until the function runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from gancolor import color` imports the module gancolor.color
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_gancolor():
    modules = module_files()
    graph = {name: gancolor_imports(name, path, modules) for name, path in modules.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_neither_torch_nor_hydra(module):
    loaded = run_python(f"import sys, {module}; print(' '.join(sorted(sys.modules)))").split()
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert heavy == [], f"{module} imports {sorted({m.split('.')[0] for m in heavy})}"


def test_every_module_imports_first():
    """Each module imported as the first gancolor module of the process (gancolor's modules
    are dropped from sys.modules between two; torch and the like stay loaded, which only
    saves time): an import that works only after some other module was loaded fails here."""
    code = f"""
import importlib, json, sys, traceback
failures = {{}}
for name in {sorted(module_files())!r}:
    for loaded in [m for m in sys.modules if m == "gancolor" or m.startswith("gancolor.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""
    failures = json.loads(run_python(code).splitlines()[-1])
    assert failures == {}, "\n".join(f"{name}:\n{trace}" for name, trace in failures.items())
