"""``diff REF_A REF_B``: what changed between two versions, renames found by content.

Built on :func:`tree.diff`, which skips every subtree whose content digest is equal, so the
cost follows the change, not the size of the versions.  A path removed and a path added with
the same content (same digest; same target for symlinks) is a *rename*; when several paths
share one content, pairs with the same base name go first, then path order.  Works across
artifacts (a dataset against its registry link, or against another artifact).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from . import model, tree
from .catalog import VersionRecord
from .verify import describe


@dataclass
class VersionDiff:
    a: str
    b: str
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    renamed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.renamed)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "added": self.added, "removed": self.removed,
                "changed": self.changed, "renamed": self.renamed}

    def lines(self) -> list[str]:
        """``A path`` / ``D path`` / ``M path`` / ``R old -> new`` (git's letters)."""
        out = [f"A {d['path']}" for d in self.added] + [f"D {d['path']}" for d in self.removed]
        out += [f"M {d['path']}" for d in self.changed]
        out += [f"R {d['from']} -> {d['to']}" for d in self.renamed]
        return sorted(out, key=lambda s: s[2:])


def _content_key(e: model.Entry) -> tuple[str, str] | None:
    if e.kind == "symlink":
        return ("symlink", e.target)
    if e.kind in ("file", "ref"):
        return (e.kind, e.digest)
    return None  # empty directories are not renamed


def _doc(path: str, e: model.Entry | None) -> dict[str, Any]:
    if e is None:
        return {"path": path}
    return {"path": path, "size": e.size if e.kind != "symlink" else 0, **describe(e)}


def diff(load: model.Loader, a: VersionRecord, b: VersionRecord) -> VersionDiff:
    """What turns version ``a`` into version ``b``."""
    raw = tree.diff(load, a.root, b.root)

    def entry(root: str, path: str) -> model.Entry | None:
        return tree.lookup(load, root, path.rstrip("/"))

    out = VersionDiff(a.label, b.label)
    removed = {p: entry(a.root, p) for p in raw.removed}
    added = {p: entry(b.root, p) for p in raw.added}
    by_key: dict[tuple[str, str], list[str]] = {}
    for p, e in removed.items():
        k = _content_key(e) if e is not None else None
        if k is not None:
            by_key.setdefault(k, []).append(p)
    for p, e in sorted(added.items()):
        k = _content_key(e) if e is not None else None
        olds = by_key.get(k, []) if k is not None else []
        if not olds:
            out.added.append(_doc(p, e))
            continue
        same_base = [o for o in olds if posixpath.basename(o) == posixpath.basename(p)]
        old = (same_base or olds)[0]
        olds.remove(old)
        assert e is not None
        out.renamed.append({"from": old, "to": p, **_doc(p, e)} | {"path": p})
        removed.pop(old)
    out.removed = [_doc(p, e) for p, e in sorted(removed.items())]
    for p in raw.changed:
        ea, eb = entry(a.root, p), entry(b.root, p)
        da, db = _doc(p, ea), _doc(p, eb)
        out.changed.append({"path": p, "size_a": da.get("size"), "size_b": db.get("size"),
                            "digest_a": da.get("digest"), "digest_b": db.get("digest")})
    return out
