"""Path-copying updates of a tree: set or remove entries at paths below a root node, encoding
again only the nodes on changed paths (a split directory only in the parts around a change).
Pure (the loader and saver do the I/O).

What is subtle: the update is iterative (directories are visited top down with an explicit
stack, then encoded children first), so a path of any depth allowed (4 096 bytes: 2 048
levels) needs no recursion; and a split directory updated part by part gives exactly the nodes
encoding it whole would (model.py's content-defined parts).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from . import model
from .model import EMPTY_NODE, Entry, Indexer, Loader, Node, Part, Saver, encode_node, sort_key
from .names import check_path


def apply_changes(
    load: Loader, save: Saver, root: str | None, changes: Mapping[str, Entry | None],
    index: Indexer | None = None,
) -> Node:
    """Path-copying update: set (or, for ``None``, remove) entries at paths below ``root``.

    Only nodes on changed paths are re-encoded and saved; everything else is shared with the
    base.  Intermediate directories are created as needed; removing a path that is absent is
    a no-op.  A directory entry given as a change replaces the whole subtree.  Given ``index``,
    a split directory is updated part by part (the result is the same as encoding it whole).
    """
    # top down (an explicit stack, whatever the depth), then each frame encoded after its
    # children, which come after it in ``frames``
    frames: list[_Frame] = []
    todo: list[tuple[str | None, Mapping[str, Entry | None], _Frame | None, str, int]] = [
        (root, changes, None, "", 0)]
    while todo:
        base, sub_changes, parent, name, mtime = todo.pop()
        f = _Frame(load, base, sub_changes, index, parent, name, mtime)
        frames.append(f)
        for head, sub in f.by_head.items():
            cur = f.updates[head] if head in f.updates else f.get(head)
            child = cur.oid if cur is not None and cur.kind == "dir" else None
            if child is None and all(v is None for v in sub.values()):
                continue
            todo.append((child, sub, f, head, cur.mtime_ns if cur is not None and cur.is_dir
                         else 0))
    node = EMPTY_NODE
    for f in reversed(frames):
        node = f.encode()
        save(node)
        if f.parent is not None:
            f.parent.updates[f.name] = node.as_entry(f.mtime)
    return node


class _Frame:
    """One directory of :func:`apply_changes`: its base and the changes below it."""

    def __init__(self, load: Loader, base: str | None, changes: Mapping[str, Entry | None],
                 index: Indexer | None, parent: _Frame | None, name: str, mtime: int) -> None:
        self.parent, self.name, self.mtime = parent, name, mtime
        self.by_head: dict[str, dict[str, Entry | None]] = {}
        self.updates: dict[str, Entry | None] = {}
        for path, e in changes.items():
            check_path(path)
            head, sep, rest = path.partition("/")
            if sep:
                self.by_head.setdefault(head, {})[rest] = e
            else:
                self.updates[head] = e
        parts = index(base) if base and index is not None else None
        self.split = _Split(load, parts) if parts else None
        self.entries: dict[str, Entry] = {} if self.split is not None or not base \
            else dict(load(base))

    def get(self, name: str) -> Entry | None:
        return self.split.get(name) if self.split is not None else self.entries.get(name)

    def encode(self) -> Node:
        if self.split is not None:
            return self.split.update(self.updates)
        for name, e in self.updates.items():
            if e is None:
                self.entries.pop(name, None)
            else:
                self.entries[name] = e
        return encode_node(self.entries)


class _Split:
    """A split directory being updated: parts are loaded only where names change."""

    def __init__(self, load: Loader, parts: Sequence[Part]) -> None:
        self.load, self.parts = load, parts
        self.keys = [sort_key(p.first) for p in parts]
        self.loaded: dict[int, Mapping[str, Entry]] = {}

    def _at(self, name: str) -> int:
        return max(0, bisect.bisect_right(self.keys, sort_key(name)) - 1)

    def _part(self, i: int) -> Mapping[str, Entry]:
        if i not in self.loaded:
            self.loaded[i] = self.load(self.parts[i].oid)
        return self.loaded[i]

    def get(self, name: str) -> Entry | None:
        return self._part(self._at(name)).get(name)

    def update(self, updates: Mapping[str, Entry | None]) -> Node:
        by_part: dict[int, dict[str, Entry | None]] = {}
        for name, e in updates.items():
            by_part.setdefault(self._at(name), {})[name] = e

        def entries_of(i: int) -> dict[str, Entry]:
            d = dict(self._part(i))
            for n, e in by_part.get(i, {}).items():
                if e is None:
                    d.pop(n, None)
                else:
                    d[n] = e
            return d

        parts, i = self.parts, 0
        out: list[Part] = []
        new: list[Node] = []
        for t in sorted(by_part):
            if t < i:
                continue  # taken into the window before
            out.extend(parts[i:t])
            # parts[t - 1] ends after a name that ends a part, so the window starts clean;
            # it grows until it ends likewise (or at the last part)
            window, end = entries_of(t), t + 1
            names = sorted(window, key=sort_key)
            while end < len(parts) and not (names and model._ends_part(names[-1])):
                window.update(entries_of(end))
                end += 1
                names = sorted(window, key=sort_key)
            for run in model._split(names):
                node = model._encode_leaf(run, window)
                new.append(node)
                out.append(model._part(run, node))
            i = end
        out.extend(parts[i:])
        if sum(p.entries for p in out) <= model.SPLIT_AT:  # small again: one plain node
            whole: dict[str, Entry] = {}
            for k in range(len(parts)):
                whole.update(entries_of(k))
            return encode_node(whole)
        return model._encode_index(out, tuple(new))
