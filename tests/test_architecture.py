"""The layering written in ingestor/__init__.py, checked over every import in the package,
and the size limits a newcomer can rely on."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ingestor"

# layer -> the layers (and third-party I/O packages) it must not import
FORBIDDEN = {
    "core": {
        "http",
        "store",
        "sink",
        "service",
        "pipeline",
        "analyze",
        "parse",
        "aiohttp",
        "sqlite3",
        "psycopg",
    },
    "parse": {"http", "store", "sink", "service", "pipeline", "analyze", "aiohttp", "sqlite3"},
    "analyze": {"http", "store", "sink", "service", "pipeline", "aiohttp", "sqlite3"},
    "http": {"store", "sink", "service", "pipeline", "analyze", "parse", "sqlite3"},
    "store": {"http", "sink", "service", "pipeline", "analyze", "aiohttp"},
    "sink": {"http", "store", "service", "pipeline", "analyze", "aiohttp", "sqlite3"},
    "pipeline": {"service", "sqlite3", "psycopg", "psycopg_pool"},
    # The configuration is read by every layer and reads none of them.
    "config": {
        "core",
        "parse",
        "analyze",
        "http",
        "store",
        "sink",
        "pipeline",
        "service",
        "aiohttp",
        "sqlite3",
        "psycopg",
    },
}
LAYERS = {"core", "parse", "analyze", "http", "store", "sink", "pipeline", "service"}


def imports_of(path: Path) -> set[str]:
    """Layers and top-level packages a module imports (lazy imports inside functions too)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; use ingestor.<layer>...")
        for name in names:
            parts = name.split(".")
            if parts[0] == "ingestor" and len(parts) > 1:
                found.add(parts[1])
            else:
                found.add(parts[0])
    return found


def layer_of(path: Path) -> str | None:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if len(relative) > 1 and relative[0] in FORBIDDEN.keys() | LAYERS else None


def test_every_module_lives_in_a_layer():
    loose = [
        p.name
        for p in PACKAGE.glob("*.py")
        if p.name not in ("__init__.py", "__main__.py", "errors.py")
    ]
    assert loose == [], "modules belong in a layer folder"


def test_layers_import_only_what_the_package_docstring_allows():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer is None or layer not in FORBIDDEN:
            continue
        bad = imports_of(path) & FORBIDDEN[layer]
        if bad:
            violations.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}")
    assert violations == []


def test_the_layering_is_written_down_where_a_newcomer_looks():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    assert doc is not None
    for layer in LAYERS:
        assert f"{layer}/" in doc, layer


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_no_two_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    assert {n: p for n, p in names.items() if len(p) > 1 or n in LAYERS} == {}


def test_the_readmes_layer_table_lists_every_module():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    missing = []
    for layer in sorted(LAYERS):
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{layer}/` |")), "")
        listed = (
            set(row.split("|")[2].replace("`", "").replace(" ", "").split(",")) if row else set()
        )
        modules = {p.stem for p in (PACKAGE / layer).glob("*.py") if p.name != "__init__.py"}
        missing += [f"{layer}/{m}" for m in sorted(modules - listed)]
    assert missing == []
