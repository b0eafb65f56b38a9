"""The package's layers point one way: no module imports another that (directly or not) imports it
back, not even inside a function, and the store never reaches up into training time, the CLI or
the web UI. Read from the source with `ast`, so a cycle hidden in a function body counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each group may import only the groups below it (and modules of its own group).
STORE = {
    "tables",
    "models",
    "db",
    "revisions",
    "migrate",
    "queries",
    "writes",
    "store",
    "transfer",
    "spool",
}
TRAINING = {
    "callback",
    "session",
    "recorder",
    "fitguard",
    "keras_objects",
    "environment",
    "checkpoint_recorder",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "cli":  # installed as tracker.cli
        parts.insert(0, "tracker")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    paths = [*ROOT.glob("tracker/**/*.py"), *ROOT.glob("cli/*.py")]
    return {_module_name(p): p for p in paths}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The tracker modules `name` imports anywhere in its source (the package root excluded:
    `from tracker import x` counts as importing `tracker.x`)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from package import module` imports the module (and runs the package's
            # __init__, which is not an import of the package's other names)
            subs = {f"{base}.{a.name}" for a in node.names} & known.keys()
            found.update(subs if len(subs) == len(node.names) else {base, *subs})
    out = set()
    for target in found:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target not in (name, "tracker"):
            out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_the_graph_is_read():
    graph = _graph()
    assert "tracker.store" in graph["tracker.callback"] or any(
        "tracker.store" in graph[m] for m in graph["tracker.callback"]
    )
    assert "tracker.tables" in graph["tracker.queries"]


def test_no_import_cycles():
    graph = _graph()
    cycles = sorted(
        f"{a} -> {b}" for a in graph for b in graph[a] if a < b and _reaches(graph, b, a)
    )
    assert cycles == [], "modules that import each other (directly or not): " + ", ".join(cycles)


@pytest.mark.parametrize("layer", sorted(STORE))
def test_the_store_does_not_import_training_cli_or_ui(layer):
    imported = _graph()[f"tracker.{layer}"]
    upward = {
        m
        for m in imported
        if m.removeprefix("tracker.") in TRAINING or m.startswith(("tracker.cli", "tracker.ui"))
    }
    assert upward == set()


def test_the_library_does_not_import_the_cli():
    graph = _graph()
    for name, imported in graph.items():
        if not name.startswith("tracker.cli"):
            assert not {m for m in imported if m.startswith("tracker.cli")}, name
