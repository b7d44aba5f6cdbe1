"""Read-only algorithms over a tree of nodes: walking, looking up a path, diffing two versions,
and re-deriving a node's digest.  Pure (loaders and openers do any I/O).

Two ways to read nodes:

* a :data:`model.Loader` (oid -> all entries; a split directory's parts joined) for small jobs
  and the commit engine;
* an :data:`Opener` (oid, from name -> the node's declared totals and its entries in name
  order from that name, a split directory's parts read one after the other), which is what
  lets :func:`stream` list a million-entry directory in bounded memory and a path prefix read
  only the nodes on its path.

What is subtle (store content is untrusted, SPEC §10):

* No recursion: every walk keeps an explicit stack, whatever the depth of the tree.
* Walks are bounded by what the tree declares: a directory entry names the totals (files and
  bytes) below it, and each node opened must hold exactly that (edge by edge, so with the
  root checked against its version record — :meth:`Catalog.check_root` — a walk visits at most
  the record's ``file_count`` files, however often a hostile DAG repeats a node).  Directories
  declare no count of their own, so empty ones (count 0) are capped at :data:`MAX_EMPTY_DIRS`
  a walk, and paths at 4096 bytes (SPEC §2), which bounds the depth.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from . import model
from .errors import IntegrityError

MAX_PATH = 4096  # bytes in a path (SPEC §2)
MAX_EMPTY_DIRS = 1_000_000  # directories holding no file, visited by one walk


class Opened(NamedTuple):
    """A node being read: its totals (files and bytes below it, as its entries or its index
    declare), how many names it holds, and its entries in name order."""

    size: int
    files: int
    names: int
    entries: Iterator[tuple[str, model.Entry]]


Opener = Callable[[str, str], Opened]  # (node oid, first name wanted) -> Opened


def totals(entries: Iterable[model.Entry]) -> tuple[int, int]:
    """(bytes, files) below a node with these entries, counted as the encoding does."""
    size = count = 0
    for e in entries:
        if e.kind == "dir":
            size += e.size
            count += e.count
        else:
            count += 1
            if e.kind != "symlink":
                size += e.size
    return size, count


def sorted_from(entries: Mapping[str, model.Entry], lo: str = ""
                ) -> Iterator[tuple[str, model.Entry]]:
    """Entries in name order (UTF-8 bytes), from the first name not below ``lo``."""
    names = sorted(entries, key=model.sort_key)
    if lo:
        keys = [model.sort_key(n) for n in names]
        names = names[bisect.bisect_left(keys, model.sort_key(lo)):]
    return ((n, entries[n]) for n in names)


def plain_opener(load: model.Loader) -> Opener:
    """An opener over a loader (whole nodes)."""
    def open_node(oid: str, lo: str = "") -> Opened:
        entries = load(oid)
        size, count = totals(entries.values())
        return Opened(size, count, len(entries), sorted_from(entries, lo))
    return open_node


def reencode(data: bytes, oid: str) -> model.Node:
    """A stored node (verified against ``oid``) encoded again canonically: its true content
    digest and totals, whatever it claims."""
    if model.is_index(data):
        return model.index_node(model.decode_index(data, oid))
    return model.encode_node(model.decode_node(data, oid))


def _check_path(path: str) -> None:
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise IntegrityError(f"tree path longer than {MAX_PATH} bytes: {path[:64]}…")


@dataclass
class _Walk:
    """One walk's state: the stack of open nodes and its counters."""

    open_node: Opener
    prefix: str | None  # only paths starting with it (a string prefix, as in W&B)
    stack: list[tuple[str, str | None, Iterator[tuple[str, model.Entry]]]] = field(
        default_factory=list)  # (path of the node + "/", name range wanted, its entries)
    empty_dirs: int = 0

    def open(self, path: str, oid: str, want: tuple[int, int] | None) -> Opened:
        """Open the node at ``path`` (``""``: the root), checked against the totals its
        parent declared, and push it, filtered to what the prefix can match."""
        pfx = f"{path}/" if path else ""
        rel = None
        if self.prefix is not None and self.prefix.startswith(pfx):
            rel = self.prefix[len(pfx):]
            if "/" in rel:
                rel = rel.split("/", 1)[0] + "/"  # only the directory on the way
        lo = rel.rstrip("/") if rel else ""
        node = self.open_node(oid, lo)
        if want is not None and (node.size, node.files) != want:
            raise IntegrityError(f"tree node {oid} at {path}/ does not hold what its parent "
                                 f"declares ({node.files} files, {node.size} bytes, not "
                                 f"{want[1]}, {want[0]})")
        self.stack.append((pfx, rel, node.entries))
        return node

    def next(self) -> tuple[str, model.Entry, bool] | None:
        """The next (path, entry, on the way only) or None at the end."""
        while self.stack:
            pfx, rel, it = self.stack[-1]
            item = next(it, None)
            if item is None:
                self.stack.pop()
                continue
            name, e = item
            if rel is not None:
                way = rel.endswith("/")
                if (way and name != rel[:-1]) or (not way and not name.startswith(rel)):
                    self.stack.pop()  # past the names the prefix can match
                    continue
                if way and e.kind != "dir":
                    continue
                return pfx + name, e, way
            return pfx + name, e, False
        return None


def stream(open_node: Opener, root: str, prefix: str | None = None, dirs: bool = False,
           want: tuple[int, int] | None = None) -> Iterator[tuple[str, model.Entry]]:
    """(path, entry) below node ``root`` in path order: files, symlinks, references and empty
    directories, plus every directory before its contents when ``dirs``.  With ``prefix``, only
    paths that start with it, reading only the nodes (and parts) that can hold them.  ``want``:
    the root's totals as its version record declares them (bytes, files)."""
    w = _Walk(open_node, prefix)
    w.open("", root, want)
    while (got := w.next()) is not None:
        path, e, on_the_way = got
        _check_path(path)
        if e.kind != "dir":
            yield path, e
            continue
        if e.count == 0:
            w.empty_dirs += 1
            if w.empty_dirs > MAX_EMPTY_DIRS:
                raise IntegrityError(f"tree holds more than {MAX_EMPTY_DIRS} empty directories "
                                     f"(at {path}/)")
        node = w.open(path, e.oid, (e.size, e.count))
        if on_the_way:
            continue
        if dirs or node.names == 0:
            yield path, e


def walk(load: model.Loader, oid: str, prefix: str = "") -> Iterator[tuple[str, model.Entry]]:
    """Depth-first (path, entry) for every entry below node ``oid``; dirs before contents;
    paths start with ``prefix``."""
    for path, e in stream(plain_opener(load), oid, dirs=True):
        yield prefix + path, e


def find(open_node: Opener, root: str, path: str) -> model.Entry | None:
    """The entry at ``path`` below root node ``root`` (``None`` if absent), reading only the
    nodes (and parts of split directories) on the way."""
    oid = root
    parts = path.split("/")
    for i, name in enumerate(parts):
        first = next(open_node(oid, name).entries, None) if name else None
        e = first[1] if first is not None and first[0] == name else None
        if e is None:
            return None
        if i == len(parts) - 1:
            return e
        if e.kind != "dir":
            return None
        oid = e.oid
    return None


def lookup(load: model.Loader, root: str, path: str) -> model.Entry | None:
    """The entry at ``path`` below root node ``root`` (``None`` if absent)."""
    return find(plain_opener(load), root, path)


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
    stack: list[tuple[Mapping[str, model.Entry], Mapping[str, model.Entry], str,
                      Iterator[str]]] = []

    def push(o: str, n: str, pfx: str) -> None:
        a, b = load(o), load(n)
        stack.append((a, b, pfx, iter(sorted(set(a) | set(b), key=model.sort_key))))

    push(old, new, prefix)
    while stack:
        a, b, pfx, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        ea, eb, path = a.get(name), b.get(name), pfx + name
        if ea is not None and eb is not None and model.same_content(ea, eb):
            continue
        if ea is not None and eb is not None and ea.kind == "dir" and eb.kind == "dir":
            push(ea.oid, eb.oid, path + "/")
        elif ea is not None and eb is not None and ea.kind != "dir" and eb.kind != "dir":
            out.changed.append(path)
        else:
            if ea is not None:
                out.removed.extend(_leaves(load, ea, path))
            if eb is not None:
                out.added.extend(_leaves(load, eb, path))
    return out


def _leaves(load: model.Loader, e: model.Entry, path: str) -> list[str]:
    """The files (and empty directories, ending in "/") at or below ``e``."""
    if e.kind != "dir":
        return [path]
    out = [f"{path}/{p}/" if x.kind == "dir" else f"{path}/{p}"
           for p, x in stream(plain_opener(load), e.oid)]
    return out or [path + "/"]
