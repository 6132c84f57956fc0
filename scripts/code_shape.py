"""Print the shape of the package: the figures issue 23 asks for before and after a restructuring.

Counts, from the source alone (nothing is imported):
- lines of each file over a limit (400 by default) and the longest functions;
- the project's own imports that sit inside functions (``import`` or ``from`` in a ``def``);
- import cycles among ``facenet`` modules through top-level imports (an import under
  ``if TYPE_CHECKING:`` does not count: it never runs), as strongly connected components.

Usage: ``python scripts/code_shape.py [--src src/facenet] [--limit 400] [--json]``.
"""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import dataclass
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The facenet modules an import statement loads."""
    found = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(node, module, is_package)
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    else:
        return []
    for name in names:
        # the longest known module that the name starts with (from x import function -> x)
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name.startswith("facenet") and name not in found:
            found.append(name)
    return found


def _parent(target: str, module: str) -> bool:
    """Whether ``target`` is a package above ``module`` (importing one's own package is no cycle)."""
    return module.startswith(target + ".")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@dataclass
class _File:
    """One module being read, and where its findings go."""

    module: str
    path: Path
    is_package: bool
    known: set[str]
    graph: dict[str, set[str]]
    graph_all: dict[str, set[str]]
    in_function: list[str]
    functions: list[tuple[int, str]]


def _walk(node: ast.AST, f: _File, in_def: bool = False, qual: str = "") -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{qual}.{child.name}" if qual else child.name
            length = (child.end_lineno or child.lineno) - child.lineno + 1
            f.functions.append((length, f"{f.path}:{child.lineno} {name}"))
            _walk(child, f, True, name)
        elif isinstance(child, ast.ClassDef):
            _walk(child, f, in_def, f"{qual}.{child.name}" if qual else child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            targets = _targets(child, f.module, f.is_package, f.known)
            mine = [t for t in targets if t != f.module and not _parent(t, f.module)]
            f.graph_all[f.module].update(mine)
            if in_def and targets:
                f.in_function.append(f"{f.path}:{child.lineno}")
            elif not in_def:
                f.graph[f.module].update(t for t in targets if t != f.module)
        else:
            _walk(child, f, in_def, qual)


def analyse(src: Path, limit: int) -> dict:
    files = sorted(src.rglob("*.py"))
    modules = {module_name(f, src): f for f in files}
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    graph_all: dict[str, set[str]] = {m: set() for m in modules}  # in-function imports too
    in_function: list[str] = []
    functions: list[tuple[int, str]] = []
    lines: dict[str, int] = {}
    for module, path in modules.items():
        text = path.read_text()
        lines[str(path)] = len(text.splitlines())
        tree = ast.parse(text)
        is_package = path.name == "__init__.py"

        _walk(
            tree, _File(module, path, is_package, known, graph, graph_all, in_function, functions)
        )

    # a package's __init__ importing its own submodules is not a cycle worth reporting
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    cycles_all = [c for c in _strongly_connected(graph_all) if len(c) > 1]
    functions.sort(reverse=True)
    return {
        "files": len(files),
        "lines": sum(lines.values()),
        "files_over_limit": {
            p: n for p, n in sorted(lines.items(), key=lambda kv: -kv[1]) if n > limit
        },
        "longest_functions": [f"{n:4d}  {where}" for n, where in functions[:10]],
        "in_function_imports": len(in_function),
        "in_function_import_sites": in_function,
        "import_cycles": [sorted(c) for c in cycles],
        "import_cycles_any": [sorted(c) for c in cycles_all],
        "graph_any": {m: sorted(t) for m, t in graph_all.items()},
    }


def import_graph(src: Path) -> dict[str, set[str]]:
    """Every ``facenet`` module and the project modules it imports anywhere in its code (an
    import under ``if TYPE_CHECKING:`` never runs and does not count)."""
    return {m: set(t) for m, t in analyse(src, limit=10**9)["graph_any"].items()}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative enough for a package's depth."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "facenet"
    )
    parser.add_argument("--limit", type=int, default=400, help="report files longer than this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = analyse(args.src, args.limit)
    if args.json:
        report.pop("graph_any")
        print(json.dumps(report, indent=2))
        return
    print(f"{report['files']} files, {report['lines']} lines")
    print(f"files over {args.limit} lines: {len(report['files_over_limit'])}")
    for path, n in report["files_over_limit"].items():
        print(f"  {n:5d}  {path}")
    print("longest functions:")
    for row in report["longest_functions"]:
        print(f"  {row}")
    print(f"in-function imports of the project's own modules: {report['in_function_imports']}")
    print(f"import cycles (top-level imports): {len(report['import_cycles'])}")
    for cycle in report["import_cycles"]:
        print(f"  {' <-> '.join(cycle)}")
    print(f"import cycles counting in-function imports too: {len(report['import_cycles_any'])}")
    for cycle in report["import_cycles_any"]:
        print(f"  {' <-> '.join(cycle)}")


if __name__ == "__main__":
    main()
