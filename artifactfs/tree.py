"""Read-only algorithms over a tree of nodes given by a loader: walking, looking up a path and
diffing two versions.  Pure (the loader does any I/O); a split directory is one mapping to
them, as loaders join its parts.  Updates are :func:`model.apply_changes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from . import model


def walk(load: model.Loader, oid: str, prefix: str = "") -> Iterator[tuple[str, model.Entry]]:
    """Depth-first (path, entry) for every entry below node ``oid``; dirs before contents."""
    for name, e in sorted(load(oid).items(), key=lambda kv: model.sort_key(kv[0])):
        path = f"{prefix}{name}"
        yield path, e
        if e.kind == "dir":
            yield from walk(load, e.oid, path + "/")


def lookup(load: model.Loader, root: str, path: str) -> model.Entry | None:
    """The entry at ``path`` below root node ``root`` (``None`` if absent)."""
    entries = load(root)
    parts = path.split("/")
    for i, part in enumerate(parts):
        e = entries.get(part)
        if e is None:
            return None
        if i == len(parts) - 1:
            return e
        if e.kind != "dir":
            return None
        entries = load(e.oid)
    return None


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def diff(load: model.Loader, old: str, new: str, prefix: str = "", out: Diff | None = None) -> Diff:
    """Files (and symlinks, refs, empty dirs) added, removed and changed from ``old`` to ``new``.

    Subtrees with equal content digests are skipped, so the cost follows the change.
    """
    out = out if out is not None else Diff()
    a, b = load(old), load(new)
    for name in sorted(set(a) | set(b), key=model.sort_key):
        ea, eb, path = a.get(name), b.get(name), prefix + name
        if ea is not None and eb is not None and model.same_content(ea, eb):
            continue
        if ea is not None and eb is not None and ea.kind == "dir" and eb.kind == "dir":
            diff(load, ea.oid, eb.oid, path + "/", out)
            continue
        if ea is not None and eb is not None and ea.kind != "dir" and eb.kind != "dir":
            out.changed.append(path)
            continue
        if ea is not None:
            _leaves(load, ea, path, out.removed)
        if eb is not None:
            _leaves(load, eb, path, out.added)
    return out


def _leaves(load: model.Loader, e: model.Entry, path: str, acc: list[str]) -> None:
    if e.kind != "dir":
        acc.append(path)
        return
    sub = load(e.oid)
    if not sub:
        acc.append(path + "/")
    for name, child in sorted(sub.items(), key=lambda kv: model.sort_key(kv[0])):
        _leaves(load, child, f"{path}/{name}", acc)
