"""The nodes of a draft's overlay tree, their identities and draft-relative paths.

A draft is a base version (or nothing) plus an overlay of :class:`DirNode` objects, whose
``over`` maps names to replacement nodes or to ``None`` (a whiteout); a name absent from
``over`` falls through to the directory entry ``base``.  This module only holds the shapes:
``drafts/draft.py`` gives them their file-system meaning, ``drafts/journal.py`` stores them.

What is subtle:

* ``ident`` is stable for a node's life, across renames and copy-up (the mount keys ``st_ino``
  on it).  An unchanged base entry has no node of its own: :func:`wrap` makes a transient one
  whose ident comes from its parent's ident and its name (:func:`child_ident`), so the ident
  stays the same when the entry is later materialized into the overlay.
* Nodes from :func:`wrap` are never mutated or persisted; a change materializes them first.
* A :class:`FileNode` with ``staged`` set has its bytes in ``files/<staged>``; its ``entry``
  is then only what it was copied from, and it counts as the content while the staging file
  still has the ``pristine`` (size, mtime) it had right after the copy.
* ``mode`` keeps the permission bits a writer set (``chmod``, the mode of ``create`` and
  ``mkdir``), so tools that compare modes (``rsync -a``) find what they set; a version keeps
  only a file's executable bit.  ``ctime_ns`` is the last attribute change in the draft.
* Paths are relative to the draft root (``""`` is the root); :func:`split_path` rejects
  ``.``, ``..``, empty and over-long names with the errno Linux would give.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from collections.abc import Iterator

from .. import model


def oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)  # OSError() picks the subclass (ENOENT → …)


def new_ident() -> bytes:
    return os.urandom(16)


def child_ident(parent: bytes, name: str) -> bytes:
    """The identity of an unchanged base entry: its parent's identity and its name."""
    return hashlib.blake2b(parent + b"/" + name.encode("utf-8", "surrogateescape"),
                           digest_size=16).digest()


class FileNode:
    __slots__ = ("ctime_ns", "entry", "executable", "ident", "mode", "mtime_ns", "pristine",
                 "staged")

    def __init__(self, ident: bytes, entry: model.Entry | None, staged: str | None = None,
                 executable: bool = False, mtime_ns: int = 0,
                 pristine: tuple[int, int] | None = None, mode: int | None = None,
                 ctime_ns: int = 0) -> None:
        self.ident = ident  # stable for the node's life, across renames and copy-up (st_ino)
        self.entry = entry  # base content (or, when staged and pristine, what it was copied from)
        self.staged = staged  # staging file name under files/
        self.executable = executable
        self.mtime_ns = mtime_ns  # of base content; a staged file's mtime is its staging file's
        self.pristine = pristine  # (size, mtime_ns) of the staging file right after copy-up
        self.mode = mode  # permission bits a writer set (None: 0755/0644 from ``executable``)
        self.ctime_ns = ctime_ns  # last attribute change (0: none in this draft)


class LinkNode:
    __slots__ = ("ctime_ns", "ident", "mtime_ns", "target")

    def __init__(self, ident: bytes, target: str, mtime_ns: int = 0, ctime_ns: int = 0) -> None:
        self.ident, self.target, self.mtime_ns, self.ctime_ns = ident, target, mtime_ns, ctime_ns


class DirNode:
    __slots__ = ("base", "ctime_ns", "ident", "mode", "mtime_ns", "over")

    def __init__(self, ident: bytes, base: model.Entry | None, mtime_ns: int = 0,
                 over: dict[str, Node | None] | None = None, mode: int | None = None,
                 ctime_ns: int = 0) -> None:
        self.ident = ident
        self.base = base  # base directory entry underneath (None: a new or opaque directory)
        self.mtime_ns = mtime_ns
        self.over: dict[str, Node | None] = over if over is not None else {}
        self.mode = mode  # permission bits a writer set (None: the default)
        self.ctime_ns = ctime_ns


Node = FileNode | LinkNode | DirNode


def wrap(e: model.Entry, ident: bytes) -> Node:
    """A transient node for an unchanged base entry (never mutated, never persisted)."""
    if e.kind == "dir":
        return DirNode(ident, e, e.mtime_ns)
    if e.kind == "symlink":
        return LinkNode(ident, e.target, e.mtime_ns)
    return FileNode(ident, e, None, e.executable, e.mtime_ns)


def norm_path(path: str) -> str:
    return "/".join(_split(path))


def split_path(path: str) -> list[str]:
    """The names of ``path`` (validated, see the module docstring)."""
    return list(_split(path))


@functools.lru_cache(maxsize=4096)
def _split(path: str) -> tuple[str, ...]:
    """Cached: every draft call splits its path, and a file's path comes back for each of
    its requests (create, write, setattr, getattr ...).  Errors are not cached."""
    if path in ("", "/"):
        return ()
    parts = tuple(path.strip("/").split("/"))
    for p in parts:
        if p in ("", ".", "..") or "\0" in p:
            raise oserror(errno.EINVAL, path)
        if len(p.encode("utf-8", "surrogateescape")) > 255:
            raise oserror(errno.ENAMETOOLONG, path)
    return parts


def staged_files(d: DirNode, prefix: str) -> Iterator[tuple[str, FileNode]]:
    """Every overlay file with a staging file, with its path (``prefix`` + its name)."""
    for name, n in d.over.items():
        if isinstance(n, FileNode) and n.staged is not None:
            yield prefix + name, n
        elif isinstance(n, DirNode):
            yield from staged_files(n, f"{prefix}{name}/")


def over_nodes(d: DirNode) -> Iterator[Node]:
    """Every node in the overlay below ``d`` (whiteouts and base entries are not nodes)."""
    for n in d.over.values():
        if n is not None:
            yield n
            if isinstance(n, DirNode):
                yield from over_nodes(n)
