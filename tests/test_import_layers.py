"""Package imports run one way. The layers, from the ground up:

  1. core: firebreak/ except firebreak/cli/ (settings, config and YAML loading, errors,
     Erlang C, background helpers)
  2. records/   3. runbooks/   4. notifications/   5. tasks/   6. reports/   7. flows/
  8. intake/    9. the CLI: firebreak/cli/ (and firebreak/__main__.py, `python -m firebreak`)

A module may import its own layer and lower ones, never a higher one, not even inside a
function. simulator/ stands apart: a fake service that imports nothing from the project but
the shared Erlang C module (firebreak.erlang_c); only the CLI (drills) starts it, so to its
importers it counts as the CLI's layer.

Every import is read from the source with `ast`, function-level ones included and relative
ones resolved, so an import hidden in a function or behind a try is seen like any other.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS = ("firebreak", "records", "runbooks", "notifications", "tasks", "reports", "flows", "intake", "firebreak.cli")
CLI = LAYERS.index("firebreak.cli")
SIMULATOR = "simulator"
#: All the simulator may import from the project.
SIMULATOR_MAY_IMPORT = frozenset({"firebreak.erlang_c"})
PACKAGES = ("firebreak", "records", "runbooks", "notifications", "tasks", "reports", "flows", "intake", SIMULATOR)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] == SIMULATOR:
        return CLI
    if parts[0] == "firebreak" and (parts[1:2] == ["cli"] or parts[1:2] == ["__main__"]):
        return CLI
    return LAYERS.index(parts[0])


def imports(source: str, module: str, is_package: bool, known: set[str]) -> list[str]:
    """Every project module `module` imports, anywhere in it (relative imports resolved;
    `from package import name` counts as the submodule when `name` is one)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append(sub if sub in known else target)
    return [name for name in found if name.split(".")[0] in PACKAGES]


def project_imports(root: Path) -> list[tuple[str, str]]:
    """(importing module, imported module) for every .py file of the project's packages."""
    files = {module_name(path, root): path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}
    edges = []
    for module, path in files.items():
        for imported in imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", set(files)):
            edges.append((module, imported))
    return edges


def layer_name(module: str) -> str:
    if module.split(".")[0] == SIMULATOR:
        return SIMULATOR
    return {0: "core", CLI: "the CLI"}.get(layer_of(module), LAYERS[layer_of(module)])


def violations(edges: list[tuple[str, str]]) -> list[str]:
    wrong = set()
    for module, imported in edges:
        if module.split(".")[0] == SIMULATOR:
            if imported.split(".")[0] != SIMULATOR and imported not in SIMULATOR_MAY_IMPORT:
                wrong.add(f"{module} -> {imported}  (the simulator imports only {', '.join(SIMULATOR_MAY_IMPORT)})")
        elif layer_of(imported) > layer_of(module):
            wrong.add(f"{module} -> {imported}  ({layer_name(module)} is below {layer_name(imported)})")
    return sorted(wrong)


def test_no_package_imports_a_higher_layer() -> None:
    edges = project_imports(REPO)
    assert edges, "no imports found: is the walker looking in the right place?"
    wrong = violations(edges)
    assert not wrong, "imports against the layer order (see this file's docstring):\n" + "\n".join(wrong)


def test_an_upward_import_hidden_in_a_function_is_caught(tmp_path: Path) -> None:
    # The check itself: an upward import inside a function, a relative one and a simulator one.
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "runbooks" / "validate.py").write_text(
        "def check():\n    from tasks.catalog import ACTIONS\n    return ACTIONS\n")
    (tmp_path / "tasks" / "catalog.py").write_text("from . import http\nfrom reports import render\n")
    (tmp_path / "tasks" / "http.py").write_text("")
    (tmp_path / "reports" / "render.py").write_text("")
    (tmp_path / "simulator" / "state.py").write_text(
        "try:\n    from firebreak import settings\nexcept ImportError:\n    pass\nfrom firebreak.erlang_c import x\n")
    (tmp_path / "firebreak" / "settings.py").write_text("")
    (tmp_path / "firebreak" / "erlang_c.py").write_text("")

    wrong = violations(project_imports(tmp_path))

    assert [line.split("  (")[0] for line in wrong] == [
        "runbooks.validate -> tasks.catalog",
        "simulator.state -> firebreak.settings",
        "tasks.catalog -> reports.render",
    ]


def test_every_package_has_a_layer() -> None:
    on_disk = {path.parent.name for path in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk == set(PACKAGES)
