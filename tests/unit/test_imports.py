"""No import cycles between the modules of artifactfs, and the mount/drafts layering.

Every ``import`` statement counts, wherever it is: at module level, inside a function
(a "late" import only hides a cycle until the function runs) and under ``TYPE_CHECKING`` (a
type that names the other side is a dependency on it all the same).  An import is an edge to
the module it names: ``from .a import b`` goes to ``a.b`` when that is a module, else to ``a``;
importing a package's submodule does not count as importing the package's ``__init__``.

Cycles that were there before the mount and the drafts were split (issue 16) and that this
work left alone are listed in :data:`KNOWN`, each with the import that closes it: such a cycle
may shrink or go, never grow, and any other cycle fails the test.  ``artifactfs/mount/`` and
``artifactfs/drafts/`` must be in none.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import artifactfs

ROOT = Path(artifactfs.__file__).parent
# Layers (docs/DESIGN.md): drafts build on these parts of the mount only, and only the
# daemon side of the mount (which plugs the drafts into the namespace and serves their
# control requests) imports the drafts package.
DRAFTS_MAY_USE = {"artifactfs.mount.draftport", "artifactfs.mount.inodes",
                  "artifactfs.mount.cache"}
MOUNT_MAY_USE_DRAFTS = {"artifactfs.mount.daemon", "artifactfs.mount.requests"}
KNOWN = [  # closed by a late or TYPE_CHECKING import; not the mount's or the drafts'
    {"artifactfs.discovery", "artifactfs.links", "artifactfs.repo"},  # late imports
    # the wandb-shaped classes refer to each other (Artifact <-> Run <-> Api)
    {"artifactfs.api._common", "artifactfs.api.artifact", "artifactfs.api.entry",
     "artifactfs.api.pending", "artifactfs.api.public", "artifactfs.api.run"},
]


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in ROOT.rglob("*.py")}


def _imports(mod: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported artifactfs module, line) for every import statement of ``mod``."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known:
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:
                    yield sub, node.lineno
                elif target in known:
                    yield target, node.lineno


def graph() -> dict[str, dict[str, int]]:
    known = _modules()
    out: dict[str, dict[str, int]] = {}
    for mod, path in known.items():
        edges = out.setdefault(mod, {})
        for dep, line in _imports(mod, path, known):
            if dep != mod:
                edges.setdefault(dep, line)
    return out


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, {})))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def _describe(g: dict[str, dict[str, int]], comp: list[str]) -> str:
    inside = set(comp)
    lines = [f"  {m} -> {d} (line {n})" for m in comp for d, n in sorted(g[m].items())
             if d in inside]
    return "cycle between " + ", ".join(comp) + ":\n" + "\n".join(lines)


def test_no_import_cycles() -> None:
    g = graph()
    found = [c for c in cycles(g) if not any(set(c) <= known for known in KNOWN)]
    assert not found, "\n".join(_describe(g, c) for c in found)


def test_the_mount_and_the_drafts_are_in_no_cycle() -> None:
    g = graph()
    found = [c for c in cycles(g)
             if any(_in(m, "artifactfs.mount") or _in(m, "artifactfs.drafts") for m in c)]
    assert not found, "\n".join(_describe(g, c) for c in found)


def test_the_finder_sees_a_cycle() -> None:
    """The check itself can fail: a planted two-module cycle is found."""
    g = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(g) == [["a", "b", "c"]]


def _in(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def test_drafts_use_only_the_seam_of_the_mount() -> None:
    g = graph()
    bad = [f"{m} -> {d} (line {n})" for m, deps in g.items() if _in(m, "artifactfs.drafts")
           for d, n in deps.items()
           if _in(d, "artifactfs.mount") and d not in DRAFTS_MAY_USE | {"artifactfs.mount"}]
    assert not bad, "drafts/ reaches into the mount beyond its seam:\n" + "\n".join(bad)


def test_only_the_daemon_side_of_the_mount_imports_drafts() -> None:
    g = graph()
    bad = [f"{m} -> {d} (line {n})" for m, deps in g.items()
           if _in(m, "artifactfs.mount") and m not in MOUNT_MAY_USE_DRAFTS
           for d, n in deps.items() if _in(d, "artifactfs.drafts")]
    assert not bad, "the mount imports drafts/ outside its daemon side:\n" + "\n".join(bad)
