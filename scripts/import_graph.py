"""Static import graph of the project's own packages: cycles and private names imported across modules.

Reads every module of jaxprobe/, kernels/ and torch_bridge/ with ``ast`` (nothing is imported or run),
resolves ``import x`` / ``from x import y`` (absolute and relative) to project modules, and reports

* import cycles among modules (strongly connected components with more than one module, or a module
  importing itself), counting imports anywhere in the file (function-level imports too);
* private names (``_name``) imported from another project module, except from ``__init__`` re-exports
  of a package's own private submodules (``from . import _cka``-style modules are named by file, not by a
  private function).

Usage: python scripts/import_graph.py [--max-private N]   (exit 1 on any cycle or more than N private imports)
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"jaxprobe": "jaxprobe", "kernels": "kernels", "torch_bridge": "torch_bridge"}


def _bench_files() -> dict[str, Path]:
    """bench/ scripts: they import project modules (checked for private names) but are not imported."""
    return {f"bench.{p.stem}": p for p in sorted((ROOT / "bench").glob("*.py"))}


def _module_files() -> dict[str, Path]:
    mods = {}
    for top, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [top, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _aliases() -> dict[str, str]:
    """Import names that resolve to a project package installed under another name."""
    return {"jaxprobe_kernels": "kernels"}


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    for alias, real in _aliases().items():
        if name == alias or name.startswith(alias + "."):
            name = real + name[len(alias):]
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def analyse():
    mods = _module_files()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private: list[tuple[str, str, str]] = []
    for mod, path in {**mods, **_bench_files()}.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    t = _resolve(a.name, mods)
                    if t and t != mod and mod in edges:
                        edges[mod].add(t)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:
                    sub = _resolve(f"{src}.{a.name}", mods)
                    if sub and sub == f"{src}.{a.name}" or (sub and sub.endswith("." + a.name)):
                        target = sub          # a submodule
                    else:
                        target = _resolve(src, mods)
                        if target and a.name.startswith("_") and not a.name.startswith("__"):
                            if target != mod:
                                private.append((mod, target, a.name))
                    if target and target != mod and mod in edges:
                        edges[mod].add(target)
    return mods, edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _is_package_parent(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-private", type=int, default=2)
    args = ap.parse_args(argv)
    mods, edges, private = analyse()
    # A package's __init__ re-exporting its submodules and the submodules importing siblings through the
    # package is the usual Python layout, not a design circle: drop package <-> own-submodule edges.
    pruned = {m: {t for t in ts if not _is_package_parent(m, t)} for m, ts in edges.items()}
    cyc = cycles(pruned)
    sizes = sorted(((sum(1 for _ in p.open()), m) for m, p in mods.items()), reverse=True)
    print(f"modules: {len(mods)}; largest: " + ", ".join(f"{m} ({n} lines)" for n, m in sizes[:3]))
    print(f"import cycles: {len(cyc)}")
    for c in cyc:
        print("  cycle: " + " <-> ".join(c))
    print(f"private names imported across modules: {len(private)}")
    for mod, target, name in private:
        print(f"  {mod} imports {target}.{name}")
    return 1 if cyc or len(private) > args.max_private else 0


if __name__ == "__main__":
    sys.exit(main())
