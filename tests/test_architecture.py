"""lwc's module structure: no import cycles among its modules (docs/architecture.md).

Every ``lwc.*`` import counts, at module level or inside a function (a function-level
import hides a cycle from Python, not from a reader): ``from lwc import x`` is an edge to
``lwc.x`` where that is a module, ``from lwc.a import name`` an edge to ``lwc.a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
#: Source folder -> package name (pyproject.toml's package-dir mapping).
SOURCES = {"compiler": "lwc", "passes": "lwc.passes", "targets": "lwc.targets"}


def lwc_modules() -> dict[str, Path]:
    """{module name: file} for every lwc module under :data:`SOURCES`."""
    modules = {}
    for folder, package in SOURCES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [package, *path.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path) -> list[str]:
    """Dotted names ``module`` imports (``from a import b`` gives ``a.b``), anywhere in it."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: anchored at this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> nx.DiGraph:
    """Edges module -> lwc module it imports (the longest dotted prefix that is a module)."""
    modules = lwc_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for name in _imported_names(module, path):
            if name.split(".")[0] != "lwc":
                continue
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph.add_edge(module, name)
    return graph


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
    path = tmp_path / "__init__.py"
    path.write_text("from .rules import Conv2D\n\ndef f():\n    from lwc import tuning\n    import lwc.driver\n")
    assert _imported_names("lwc.schedules", path) == ["lwc.schedules.rules.Conv2D", "lwc.tuning",
                                                      "lwc.driver"]
    assert import_graph().has_edge("lwc.driver", "lwc.tuning.apply")  # inside compile()


def _rotated(cycle: list[str]) -> list[str]:
    """``cycle`` starting at its smallest name (one spelling per cycle)."""
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]


def test_no_import_cycles():
    cycles = sorted(_rotated(cycle) for cycle in nx.simple_cycles(import_graph()))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


#: Modules allowed past :data:`MAX_LINES`, each with the reason it is one module.
LONG_MODULES = {
    "lwc.cuda": "one job (a CUDA build ahead of time: toolkit choice, fp16, fatbin packing, the "
                "structural check of an artifact) whose parts share the toolkit and fatbin types",
}
MAX_LINES = 600


def test_no_module_over_600_lines_without_a_reason():
    long = {name: len(path.read_text().splitlines()) for name, path in lwc_modules().items()}
    over = {name: n for name, n in long.items() if n > MAX_LINES and name not in LONG_MODULES}
    assert over == {}, f"modules over {MAX_LINES} lines: {over} (split them, or state the reason in LONG_MODULES)"
