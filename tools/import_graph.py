"""Module sizes and the intra-package import graph of ``algan`` (static: ast, nothing is imported or executed).

Usage::

    python tools/import_graph.py            # sizes per subpackage, subpackage edges, cycles
    python tools/import_graph.py --modules  # also every module -> module edge

Every ``import``/``from ... import`` statement anywhere in a module counts (module level and inside functions:
a lazy import is still a dependency). Output is plain text, one fact a line, so that two runs can be diffed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "algan"


def module_name(path: Path, root: Path = ROOT) -> str:
    """Dotted module name of ``path`` (a .py file under ``root``): ``algan/edge/app.py`` -> ``algan.edge.app``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> path."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imported_names(path: Path, name: str, is_package: bool) -> set[str]:
    """Dotted names that the module at ``path`` imports (relative imports resolved; names, not yet modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    base = name.split(".") if is_package else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import name``: the submodule pkg.name where there is one, else pkg (resolved by the caller)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from algan.edge import app`` resolves to ``algan.edge.app``)."""
    mods = package_modules(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str] = set()
        for imp in imported_names(path, name, path.name == "__init__.py"):
            if imp == package or imp.startswith(package + "."):
                # the longest prefix that is a module: a name imported from a module resolves to that module
                parts = imp.split(".")
                while parts and ".".join(parts) not in mods:
                    parts.pop()
                if parts:
                    targets.add(".".join(parts))
        targets.discard(name)
        graph[name] = targets
    return graph


def group_of(module: str) -> str:
    """The layer a module belongs to: its first subpackage (``algan.edge.app`` -> ``edge``), or the module's own
    name for top-level modules (``algan.bundle`` -> ``bundle``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted; sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def group_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Subpackage -> subpackages it imports (edges inside one subpackage dropped)."""
    out: dict[str, set[str]] = defaultdict(set)
    for src, targets in graph.items():
        out[group_of(src)]
        for t in targets:
            if group_of(t) != group_of(src):
                out[group_of(src)].add(group_of(t))
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", action="store_true", help="also print every module -> module edge")
    args = ap.parse_args(argv)
    mods = package_modules()
    graph = import_graph()
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, path in mods.items():
        sizes[group_of(name)][0] += 1
        sizes[group_of(name)][1] += len(path.read_text(encoding="utf-8").splitlines())
    print("# sizes: group modules lines")
    for g, (n, lines) in sorted(sizes.items(), key=lambda kv: -kv[1][1]):
        print(f"{g:14s} {n:3d} {lines:6d}")
    print(f"{'total':14s} {len(mods):3d} {sum(v[1] for v in sizes.values()):6d}")
    print("# group imports")
    for g, targets in sorted(group_graph(graph).items()):
        print(f"{g:14s} -> {', '.join(sorted(targets)) or '-'}")
    print("# module cycles")
    for comp in cycles(graph):
        print(" <-> ".join(comp))
    print("# group cycles")
    for comp in cycles(group_graph(graph)):
        print(" <-> ".join(comp))
    if args.modules:
        print("# module imports")
        for src in sorted(graph):
            for t in sorted(graph[src]):
                print(f"{src} -> {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
