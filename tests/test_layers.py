"""The package's layers point one way: no module imports another that (directly or not) imports it
back, not even inside a function, and the store never reaches up into training time, the CLI or
the web UI. Read from the source with `ast`, so a cycle hidden in a function body counts too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The layers, top to bottom; a module may import its own layer and those below it. Within the
# store, the Store itself sits above the statements and the schema.
LAYERS = [
    ("tracker.cli", "tracker.ui"),
    ("tracker.training",),
    ("tracker.present",),
    ("tracker.restore", "tracker.uploads", "tracker.artifacts"),
    ("tracker.store",),
]


def _layer(name: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return None  # shared modules at the top of `tracker` (records, errors, config...): anyone's


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
    assert "tracker.store.run_store" in graph["tracker.training.callback"] or any(
        "tracker.store.run_store" in graph[m] for m in graph["tracker.training.callback"]
    )
    assert "tracker.store.tables" in graph["tracker.store.queries"]


def test_no_import_cycles():
    graph = _graph()
    cycles = sorted(
        f"{a} -> {b}" for a in graph for b in graph[a] if a < b and _reaches(graph, b, a)
    )
    assert cycles == [], "modules that import each other (directly or not): " + ", ".join(cycles)


def test_layers_point_down():
    graph = _graph()
    upward = []
    for name, imported in graph.items():
        mine = _layer(name)
        for target in imported:
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs < mine:
                upward.append(f"{name} -> {target}")
            # a shared module imports nothing that has a layer but the store (the package
            # root is the public API: it names what each layer offers, loaded on first use)
            shared = mine is None and name != "tracker"
            if shared and theirs is not None and theirs != len(LAYERS) - 1:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_the_store_does_not_import_the_rest_of_tracker():
    graph = _graph()
    for name, imported in graph.items():
        if name.startswith("tracker.store"):
            outside = {t for t in imported if _layer(t) not in (None, len(LAYERS) - 1)}
            assert outside == set(), name


def test_the_library_does_not_import_the_cli():
    graph = _graph()
    for name, imported in graph.items():
        if not name.startswith("tracker.cli"):
            assert not {m for m in imported if m.startswith("tracker.cli")}, name


# What reads files, the database or the network: a view builder is handed what they found.
_IO_MODULES = {
    "tracker.artifacts",
    "tracker.checkpoint_files",
    "tracker.uploads",
    "tracker.restore",
    "tracker.store.run_store",
    "tracker.store.queries",
    "tracker.store.transactions",
    "tracker.store.db",
    "sqlalchemy",
    "fsspec",
    "hashlib",
}


def _runtime_imports(path: Path) -> set[str]:
    """Modules `path` imports when it runs (annotation-only imports under `TYPE_CHECKING` left
    out), anywhere in the file."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return found


def test_presentation_only_shapes_data():
    """`tracker.present` builds what the CLI and the UI show from records it is handed: it
    reads no file (a checkpoint's state is found by the caller), no database, no network."""
    paths = sorted((ROOT / "tracker" / "present").glob("*.py"))
    assert len(paths) >= 4
    for path in paths:
        io = {m for m in _runtime_imports(path) if m in _IO_MODULES}
        assert io == set(), f"{path.name} imports {sorted(io)}"
        assert "open(" not in path.read_text(), path.name
