"""The lineage graph around a version: runs and artifact versions, several hops out.

Nodes are artifact versions (``P/N:vN``, with their type and aliases) and runs
(``run:P/ID``, with their job type); an edge goes from a version to a run that used it and
from a run to a version it logged.  :func:`graph` walks the graph outward from one version
(producers, their inputs, consumers, their outputs, … in every direction) for ``depth`` run
hops, breadth first, and stops at :data:`MAX_NODES` nodes (``truncated`` says so).  The dict
it returns is the ``--format json`` shape; :func:`dot` renders it in graphviz's language and
:func:`draw` turns that into SVG or PNG with graphviz's ``dot`` program.

What is subtle: every label comes from the store, which is untrusted: :func:`_quote` escapes
quotes, backslashes and control characters, so a hostile name can not inject DOT.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import deque
from typing import Any

from .catalog import Catalog, RunRecord, VersionRecord
from .errors import ArtifactfsError, NotFound, UsageError
from .names import Ref

MAX_NODES = 500


def _vid(rec: VersionRecord | Ref) -> str:
    if isinstance(rec, Ref):
        return str(rec)
    return rec.label


def _rid(run: RunRecord) -> str:
    return f"run:{run.project}/{run.id}"


class _Walk:
    def __init__(self, cat: Catalog, max_nodes: int) -> None:
        self.cat, self.max_nodes = cat, max_nodes
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: set[tuple[str, str]] = set()
        self.truncated = False
        self._aliases: dict[tuple[str, str], dict[int, list[str]]] = {}

    def version_node(self, rec: VersionRecord) -> str:
        nid = _vid(rec)
        if nid not in self.nodes:
            self.nodes[nid] = {"id": nid, "kind": "artifact", "type": rec.type,
                               "aliases": self.aliases(rec)}
        return nid

    def aliases(self, rec: VersionRecord) -> list[str]:
        key = (rec.project, rec.name)
        if key not in self._aliases:
            by: dict[int, list[str]] = {}
            latest = self.cat.latest(rec.project, rec.name)
            if latest is not None:
                by.setdefault(latest.version, []).append("latest")
            for a, v in sorted(self.cat.aliases(rec.project, rec.name).items()):
                by.setdefault(v, []).append(a)
            self._aliases[key] = by
        return self._aliases[key].get(rec.version, [])

    def run_node(self, run: RunRecord) -> str:
        nid = _rid(run)
        if nid not in self.nodes:
            self.nodes[nid] = {"id": nid, "kind": "run", "job_type": run.job_type,
                               "group": run.group}
        return nid

    def full(self) -> bool:
        if len(self.nodes) >= self.max_nodes:
            self.truncated = True
        return self.truncated

    def version_neighbours(self, rec: VersionRecord) -> list[RunRecord]:
        out = []
        try:
            producer = self.cat.logged_by(rec)
        except NotFound:
            producer = None
        if producer is not None:
            self.edges.add((self.run_node(producer), _vid(rec)))
            out.append(producer)
        for run in self.cat.used_by(rec):
            self.edges.add((_vid(rec), self.run_node(run)))
            out.append(run)
        return out

    def run_neighbours(self, run: RunRecord) -> list[VersionRecord]:
        out = []
        for kind in ("inputs", "outputs"):
            for ref in self.cat.run_artifacts(run, kind):
                try:
                    rec = self.cat.resolve(ref)
                except NotFound:  # deleted since: shown, not followed
                    self.nodes.setdefault(str(ref), {"id": str(ref), "kind": "artifact",
                                                     "deleted": True})
                    nid = str(ref)
                else:
                    nid = self.version_node(rec)
                    out.append(rec)
                self.edges.add((nid, _rid(run)) if kind == "inputs" else (_rid(run), nid))
        return out


def graph(cat: Catalog, rec: VersionRecord, depth: int = 1,
          max_nodes: int = MAX_NODES) -> dict[str, Any]:
    """Runs and versions within ``depth`` run hops of ``rec`` (see the module docstring)."""
    if depth < 1:
        raise UsageError(f"invalid depth {depth!r}: must be at least 1")
    w = _Walk(cat, max_nodes)
    w.version_node(rec)
    queue: deque[tuple[VersionRecord | RunRecord, int]] = deque([(rec, 0)])
    seen = {_vid(rec)}
    while queue and not w.full():
        item, hops = queue.popleft()
        if isinstance(item, VersionRecord):
            if hops >= depth:
                continue
            for run in w.version_neighbours(item):
                if _rid(run) not in seen:
                    seen.add(_rid(run))
                    queue.append((run, hops + 1))
        else:
            for v in w.run_neighbours(item):
                if _vid(v) not in seen:
                    seen.add(_vid(v))
                    queue.append((v, hops))
    edges = sorted(e for e in w.edges if e[0] in w.nodes and e[1] in w.nodes)
    return {"artifact": rec.label, **_one_hop(rec.label, w.nodes, edges), "depth": depth,
            "nodes": sorted(w.nodes.values(), key=lambda n: n["id"]),
            "edges": [{"from": a, "to": b} for a, b in edges], "truncated": w.truncated}


def _one_hop(me: str, nodes: dict[str, dict[str, Any]], edges: list[tuple[str, str]]
             ) -> dict[str, Any]:
    """``logged_by`` (the producer and its inputs) and ``used_by`` (each consumer and its
    outputs): the first hop, in the shape ``lineage --format json`` always had."""
    def run_doc(rid: str, kind: str) -> dict[str, Any]:
        linked = sorted(a for a, b in edges if b == rid) if kind == "inputs" else \
            sorted(b for a, b in edges if a == rid)
        return {"run": rid.removeprefix("run:"), "job_type": nodes[rid].get("job_type", ""),
                kind: linked}

    producers = [a for a, b in edges if b == me]
    return {"logged_by": run_doc(producers[0], "inputs") if producers else None,
            "used_by": [run_doc(b, "outputs") for a, b in edges if a == me]}


def _quote(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _label(n: dict[str, Any]) -> str:
    if n["kind"] == "run":
        return "\n".join(x for x in (n["id"].removeprefix("run:"), n.get("job_type")) if x)
    extra = [n.get("type") or ""] + ([", ".join(n["aliases"])] if n.get("aliases") else [])
    if n.get("deleted"):
        extra = ["deleted"]
    return "\n".join(x for x in (n["id"], *extra) if x)


def dot(g: dict[str, Any]) -> str:
    """The graph in graphviz's DOT language (runs as ellipses, versions as boxes)."""
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for n in g["nodes"]:
        shape = "ellipse" if n["kind"] == "run" else "box"
        style = ",style=bold" if n["id"] == g["artifact"] else ""
        lines.append(f"  {_quote(n['id'])} [shape={shape}{style},label={_quote(_label(n))}];")
    for e in g["edges"]:
        lines.append(f"  {_quote(e['from'])} -> {_quote(e['to'])};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(dot_text: str, fmt: str, timeout: float = 60) -> bytes:
    """SVG or PNG bytes of a DOT graph, drawn by graphviz's ``dot`` program."""
    if fmt not in ("svg", "png", "json"):
        raise UsageError(f"unknown picture format {fmt!r}: use svg or png")
    exe = shutil.which("dot")
    if exe is None:
        raise ArtifactfsError("drawing lineage needs graphviz's dot program: install the "
                              "graphviz package (apt-get install graphviz), or use "
                              "--format dot or json")
    r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                       timeout=timeout, check=False)
    if r.returncode != 0:
        raise ArtifactfsError(f"graphviz could not draw the graph: "
                              f"{r.stderr.decode(errors='replace').strip()[:200]}")
    return r.stdout
