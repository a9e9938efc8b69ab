"""Imports flow one way (issue 9): workloads/ never imports mlops/, and no module imports itself back.

Every import counts, the ones inside functions too, read from the source with ast.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mlops", "workloads", "components")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO_ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports (`from a.b import c` counts a.b.c when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {n for n in names if n in modules}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {name: _imports(path, names) - {name} for name, path in modules.items()}


def test_workloads_import_nothing_from_mlops() -> None:
    graph = _graph()
    bad = {
        m: sorted(d for d in deps if d.split(".")[0] == "mlops")
        for m, deps in graph.items()
        if m.startswith("workloads")
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            # A package's __init__ importing its own modules is not a cycle back through the package.
            if node.startswith(dep + ".") or dep.startswith(node + "."):
                continue
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_a_client_reads_the_daemons_run_file_without_importing_the_server() -> None:
    graph = _graph()
    reach: set[str] = set()
    todo = ["mlops.local.client", "mlops.local.state"]
    while todo:
        module = todo.pop()
        if module in reach:
            continue
        reach.add(module)
        todo.extend(graph[module])
    assert "mlops.local.runfile" in reach
    assert not reach & {"mlops.local.daemon", "mlops.local.api", "mlops.local.deployer"}


def test_the_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from mlops.local import daemon\n    import workloads.train.steps\n")
    assert _imports(source, {"mlops.local.daemon", "workloads.train.steps", "mlops.local"}) == {
        "mlops.local",
        "mlops.local.daemon",
        "workloads.train.steps",
    }
