"""The package's architecture, checked: no import circle, and no layer importing a higher one.

Every ``import`` in ``auditor/`` — at module level or inside functions, where lazy imports hide
circles — is an edge of the module graph; imports under ``if TYPE_CHECKING:`` run only in the
type checker and are left out. Sub-packages are ranked bottom to top (:data:`LAYERS`); a module
may import its own sub-package and those below it. The root modules ``errors``, ``_version`` and
``_compat`` are the bottom (the last only forwards old import paths, by name, at run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "auditor"
LAYERS = ["certificate", "nets", "teachers", "sources", "audit", "reports", "training", "cli"]
ROOT_MODULES = {"auditor.errors", "auditor._version", "auditor._compat", "auditor.compiled"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> set[str]:
    """The auditor modules that module ``name`` imports (a package's submodule when one is named)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("auditor")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("auditor"):
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> int:
    if name in ROOT_MODULES:
        return -1
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the graph's strongly connected components with more than one module."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_graph_sees_lazy_imports():
    # The checker itself: a function-level import is an edge (diagnostics imports nothing lazily, but
    # the training monitor's Lightning callback and verify's re-run do).
    assert "auditor.audit.pipeline" in GRAPH["auditor.audit.verify"]
    assert "auditor.nets.registry" in GRAPH["auditor.sources.checkpoint"]


def test_no_import_circle():
    assert strongly_connected(GRAPH) == []


def test_layers_rank_the_sub_packages_bottom_to_top():
    assert (
        layer("auditor.errors")
        < layer("auditor.certificate.state")
        < layer("auditor.sources.arrays")
        < layer("auditor.audit.pipeline")
        < layer("auditor.reports.html")
        < layer("auditor.cli.app")
    )
    # the edge the old layout had (the certificate checker reading the Markdown renderer) would fail
    assert layer("auditor.reports.markdown") > layer("auditor.certificate.check")


def test_strongly_connected_finds_a_circle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_layer(name):
    upward = sorted(target for target in GRAPH[name] if layer(target) > layer(name))
    assert upward == [], f"{name} (layer {layer(name)}) imports higher layers: {upward}"


def test_only_a_handful_of_modules_at_the_top():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_compat.py", "_version.py", "compiled.py", "errors.py"]


def registrations_by_import(tree: ast.Module) -> list[str]:
    """Module-level statements that fill a table when the module is imported: ``TABLE[key] = …``
    or a class or function decorated with ``register…``."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Subscript) for target in node.targets):
            found.append(ast.unparse(node))
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            found += [f"@{ast.unparse(d)} {node.name}" for d in node.decorator_list if "register" in ast.unparse(d)]
    return found


def test_registration_by_import_is_detected():
    assert registrations_by_import(ast.parse("TABLE['conv'] = build\n@register_method\nclass A: pass")) == [
        "TABLE['conv'] = build",
        "@register_method A",
    ]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_registries_are_filled_in_one_place_not_by_imports(name):
    # Architectures, methods, data formats, model and teacher sources and report formats are each
    # listed in one registry module; no module adds itself to one as a side effect of being imported.
    assert registrations_by_import(ast.parse(MODULES[name].read_text())) == []
