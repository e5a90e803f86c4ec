"""The shape of the code: which package may import which, no import cycles, short functions.

These read the source with ``ast`` (every ``import``, also those inside functions), so a
lazy import that closes a cycle is caught as surely as a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lisa_formats", "lisa_plugin", "eval_harness", "lisa_demo")
MAX_FUNCTION_LINES = 60

# Which of our packages each package may import (the arrows of docs/architecture.md).
ALLOWED = {
    "lisa_formats": set(),
    "lisa_plugin": {"lisa_formats"},
    "eval_harness": {"lisa_formats"},
    "lisa_demo": {"lisa_formats", "lisa_plugin", "eval_harness"},
}
# The one exception: the demo-data generators of eval_harness borrow lisa_plugin's word lists.
ALLOWED_MODULES = {("eval_harness", "lisa_plugin.tools.corpus")}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")[: len(importer.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> set[str]:
    """Our modules that ``module`` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


GRAPH = {module: _imports(module) for module in MODULES}


def test_packages_import_only_what_the_architecture_allows():
    wrong = []
    for module, imported in GRAPH.items():
        package = module.split(".")[0]
        for target in imported:
            other = target.split(".")[0]
            if other == package or other in ALLOWED[package] or (package, target) in ALLOWED_MODULES:
                continue
            wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_between_modules():
    # A package's __init__ re-exporting its own modules (lazily or not) is how packages work,
    # not a cycle between two pieces of logic: edges from a module to its own ancestors are left out.
    graph = {
        module: {t for t in targets if not (module + ".").startswith(t + ".") and t != module}
        for module, targets in GRAPH.items()
    }
    graph = {m: {t for t in ts if not (MODULES[t].name == "__init__.py" and t.split(".")[0] == m.split(".")[0]
                                       and m.startswith(t + "."))} for m, ts in graph.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(REPO)}:{node.lineno} {node.name}() has {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_is_longer_than_60_lines():
    sources = list(MODULES.values()) + sorted((REPO / "benchmarks").glob("*.py"))
    long = [entry for path in sources for entry in _long_functions(path)]
    assert not long, "\n".join(long)


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = REPO / "tests" / f"_long_{tmp_path.name}.py"  # under REPO: the check reports repo paths
    try:
        path.write_text(f"def long():\n{body}\n")
        assert len(_long_functions(path)) == 1
    finally:
        path.unlink()


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return set(out.stdout.split())


def test_lisa_formats_needs_the_standard_library_only():
    loaded = _loaded_after("import lisa_formats.atomic, lisa_formats.jsonl, lisa_formats.history, "
                           "lisa_formats.norms, lisa_formats.suggest")
    assert not loaded & {"torch", "numpy", "transformers", "pydantic", "yaml", "lisa_plugin", "eval_harness"}


@pytest.mark.parametrize("entry", ["eval_harness.report", "eval_harness.discovery"])
def test_the_report_side_imports_no_training_code(entry):
    loaded = _loaded_after(f"import {entry}")
    assert not loaded & {"torch", "transformers", "axolotl", "lisa_plugin"}, entry


def test_example_configs_are_package_data():
    from lisa_plugin.tools.axolotl_runner import example_config, example_configs_dir

    assert example_configs_dir().is_relative_to(REPO / "lisa_plugin")
    for method in ("lisa", "lora", "full"):
        assert example_config(f"tiny-{method}.yml").is_file()
    with pytest.raises(FileNotFoundError, match="Did you mean 'tiny-lisa.yml'"):
        example_config("tiny-lsia.yml")
