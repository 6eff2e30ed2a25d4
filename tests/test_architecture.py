"""The house's rules, read from the source: arrows one way, no cycles, no oversized module.

The import graph of ``medvision/`` is built with ``ast`` (nothing is executed): every
``import``/``from ... import`` naming a medvision module, at any depth of a file (imports
inside functions count too), is an arrow from that file's module to the named module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medvision"
MAX_LINES = 450

#: The layers, bottom first. An import may point to a lower layer, or within its own package;
#: never up a layer, nor across to the other package of the same layer (data <-> models,
#: apply <-> training). ``medvision/__init__.py`` sits above them all.
LAYERS = (
    ("medvision.utils",),
    ("medvision.evaluation",),
    ("medvision.data", "medvision.models"),
    ("medvision.apply", "medvision.training"),
    ("medvision.pipelines",),
    ("medvision.cli",),
)
#: Arrows the restructuring has not removed yet (each one is a bug to fix).
KNOWN_WRONG: set[str] = set()


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, package) of a medvision module; the root package is above every layer."""
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if within(module, package):
                return index, package
    if module == "medvision":
        return len(LAYERS), module
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement in ``path`` refers to (relative ones resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = (
                    module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                )
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "medvision"}


def import_graph() -> dict[str, set[str]]:
    """Module -> the medvision modules it imports (a name inside a module maps to the module)."""
    modules = module_names()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(f"{name}."):
                graph[module].add(name)  # a package importing its parent's names is no arrow
    return graph


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_at_any_depth(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from medvision.data import io\n    import medvision.cli\n")
    assert imported_names("medvision.x", source) == {
        "medvision.data",
        "medvision.data.io",
        "medvision.cli",
    }


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def wrong_arrows(graph: dict[str, set[str]]) -> set[str]:
    """Arrows up a layer, or across to the other package of the same layer."""
    wrong = set()
    for source, targets in graph.items():
        source_layer, source_package = layer_of(source)
        for target in targets:
            target_layer, target_package = layer_of(target)
            upward = target_layer > source_layer
            across = target_layer == source_layer and target_package != source_package
            if upward or across:
                wrong.add(f"{source} -> {target}")
    return wrong


def test_the_layer_rule_finds_upward_and_sideways_arrows():
    graph = {
        "medvision.models.segmentation": {"medvision.data.io", "medvision.evaluation.metrics"},
        "medvision.utils.files": {"medvision.cli.runs"},
    }
    assert wrong_arrows(graph) == {
        "medvision.models.segmentation -> medvision.data.io",
        "medvision.utils.files -> medvision.cli.runs",
    }


def test_no_arrow_runs_up_a_layer():
    assert wrong_arrows(import_graph()) - KNOWN_WRONG == set()


def test_every_module_has_a_layer():
    for module in module_names():
        layer_of(module)


def test_nets_are_plain_torch():
    graph = import_graph()
    wrong = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        if within(source, "medvision.models.nets")
        for target in targets
        if not within(target, "medvision.models.nets")
    ]
    assert wrong == []
    for path in (PACKAGE / "models" / "nets").glob("*.py"):
        assert "lightning" not in path.read_text(), f"{path} mentions lightning"


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_over_the_size_limit():
    sizes = {str(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        ("medvision.models.nets", ("lightning", "medvision.data", "medvision.training")),
        ("medvision.training.guards", ("medvision.data", "medvision.models")),
        ("medvision.data.io", ("lightning", "medvision.models", "torch")),
        ("medvision.models.losses", ("lightning", "medvision.data")),
    ],
)
def test_light_modules_load_light(module, not_loaded):
    code = (
        f"import sys, {module}; "
        f"print(sorted({{p for p in {list(not_loaded)!r} for m in sys.modules "
        f"if m == p or m.startswith(p + '.')}}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"import {module} loaded {loaded}"


def test_every_registered_name_is_defined_where_the_registry_says():
    """The one registry (``medvision/utils/registry.py``) names each export's own module."""
    import importlib

    from medvision.utils.registry import REGISTRY, exported

    for package in REGISTRY:
        module = importlib.import_module(package)
        for name, where in exported(package).items():
            defined = getattr(importlib.import_module(f"{package}.{where}"), name)
            assert getattr(module, name) is defined, f"{package}.{name}"
            assert getattr(defined, "__module__", f"{package}.{where}") == f"{package}.{where}"
        assert module.__all__ == sorted(exported(package))


def drawn_modules() -> dict[str, set[str]]:
    """The modules docs/architecture.md's drawing names, by top-level package: ``name.py``
    tokens, and ``sub/`` for every module of a subpackage."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    drawing = text.split("```\n")[1]
    drawn: dict[str, set[str]] = defaultdict(set)
    package = None
    for line in drawing.splitlines():
        words = line.split()
        for word in words[:3]:  # a layer's package begins a section ("layer 3  data/")
            if word.endswith("/") and (PACKAGE / word.rstrip("/") / "__init__.py").exists():
                package = word.rstrip("/")
                break
        for word in words:
            if package and (word.endswith(".py") or word.endswith("/")):
                drawn[package].add(word)
    return drawn


def test_the_architecture_page_draws_every_module_and_only_real_ones():
    drawn = drawn_modules()
    assert sorted(drawn) == sorted(
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    )
    for package, words in drawn.items():
        folder = PACKAGE / package
        named = {w for w in words if w.endswith(".py")}
        subpackages = {w.rstrip("/") for w in words if w.endswith("/") and w != f"{package}/"}
        assert all((folder / name).is_file() for name in named), (package, named)
        assert all((folder / sub / "__init__.py").is_file() for sub in subpackages), package
        actual = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
        assert actual - named == set(), (
            f"docs/architecture.md does not draw {package}/{actual - named}"
        )
