"""Inode numbers and lookup counts of one mount.

Inode numbers are derived from an *identity*: a 16-byte BLAKE2b of what the inode is
(``project``, ``project/name``, ``project/name/vN``, an alias with its target, and for a path
inside a version the parent's identity plus the entry name).  The same path of the same version
therefore gets the same number every time it is looked up, even after the kernel forgot it, so
``st_ino`` is stable for the mount's life without remembering every inode ever handed out, and
a number never names other content (an alias that moves gets a new identity, hence a new
number).  Two identities colliding on 63 bits while both are live is astronomically unlikely;
if it happens the newcomer probes to the next free number and is remembered in ``_probed``.

Lookup counts follow the kernel: +1 for every reply that hands it an entry (lookup, and
readdirplus entries that ``readdir_reply`` accepted), -n on ``forget``.  An inode whose count
drops to zero leaves the table.  The root and ``drafts`` are permanent.

Memory: after ``ls -l`` of a big directory the kernel holds every entry, so the table holds one
object per entry until the kernel forgets them.  Files and symlinks inside versions are
:class:`Leaf` objects: number, count, parent directory inode and name, ~200 bytes with their
table slot (an :class:`Inode` with its packed entry and cached attributes took ~1 KB).  Their
packed entry stays in the manifest cache; :meth:`InodeTable.get` hands out a transient
:class:`Inode` built from it, so callers see one kind of inode.  Counts of leaves are only
changed through the leaf itself (:meth:`InodeTable.leaf`, ``forget``), never through such a
transient copy.  The table's dict is rebuilt when it has shrunk to a quarter of its peak
(a dict never gives back the slots of deleted keys).

Inodes inside drafts are keyed on a per-draft-object nonce plus the draft node's own identity
(``drafts.Info.ident``), which survives renames and copy-up; a discarded draft re-created under
the same name gets a new nonce, so its inodes get new numbers.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from ..model import Entry
from .cache import RAW_DIR, Raw, entry_from_raw

ROOT_INO = 1
DRAFTS_INO = 2
FIRST_HASHED = 1 << 32  # numbers below are for fixed and (later) counter-allocated inodes
_SPACE = (1 << 63) - FIRST_HASHED


class Kind(enum.IntEnum):
    ROOT = 1
    DRAFTS = 2
    PROJECT = 3
    ARTIFACT = 4
    VERSION = 5  # a version's root directory
    DIR = 6  # a directory inside a version
    FILE = 7  # a file or a reference inside a version
    SYMLINK = 8  # a symlink inside a version
    ALIAS = 9  # an alias symlink next to the version directories
    DRAFT_PROJECT = 10  # drafts/PROJECT (holds only drafts)
    DRAFT_NAME = 11  # drafts/PROJECT/NAME (holds only drafts)
    DDIR = 12  # a draft's root or a directory inside a draft
    DFILE = 13  # a file inside a draft
    DLINK = 14  # a symlink inside a draft


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What every inode of one version shares (one object per version, not per inode)."""

    project: str
    name: str
    version: int
    root: str  # root node object id
    created_ns: int  # commit time, the version directory's mtime


class Inode:
    __slots__ = ("_entry", "attrs", "d", "dir", "ident", "ino", "kind", "lookups", "name",
                 "opened", "project", "raw", "target", "ver")

    def __init__(self, ino: int, kind: Kind, ident: bytes) -> None:
        # one of these per entry listed: keep it to plain attribute stores
        self.ino = ino
        self.kind = kind
        self.ident = ident
        self.lookups = 0
        self.ver: VersionInfo | None = None
        self.raw: Raw | None = None  # content inodes: the packed entry (see cache.py)
        self.dir = ""  # content inodes: the tree node of the directory holding them
        self.opened = False  # opened before: the kernel may hold its pages (keep_cache)
        self._entry: Entry | None = None
        self.attrs: object = None  # the kernel attributes, cached for immutable inodes
        self.project = self.name = self.target = ""  # virtual inodes; alias target "vN"
        self.d: Any = None  # inodes inside a draft: where they are (see drafts/ops.py)

    @property
    def entry(self) -> Entry:
        """The entry of a content inode (built from ``raw`` on first use)."""
        if self._entry is None:
            assert self.raw is not None
            self._entry = entry_from_raw(self.raw)
        return self._entry

    @property
    def oid(self) -> str:
        """The tree node of a version or directory inode."""
        if self.kind == Kind.VERSION:
            assert self.ver is not None
            return self.ver.root
        assert self.raw is not None and self.raw[0] == RAW_DIR
        return str(self.raw[3])

    def __repr__(self) -> str:
        return f"<Inode {self.ino} {self.kind.name} n={self.lookups}>"


class Leaf:
    """A file, reference or symlink inside a version that the kernel holds (see above)."""

    __slots__ = ("ino", "kind", "lookups", "name", "opened", "parent")

    def __init__(self, ino: int, kind: Kind, parent: Inode, name: bytes) -> None:
        self.ino = ino
        self.kind = kind
        self.lookups = 0
        self.opened = False  # see Inode.opened
        self.parent = parent  # the directory (or version) inode it was found in
        self.name = name

    @property
    def ident(self) -> bytes:
        return blake2b(self.parent.ident + self.name, digest_size=16).digest()

    def __repr__(self) -> str:
        return f"<Leaf {self.ino} {self.kind.name} n={self.lookups}>"


def ident(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.digest()


def child_ident(parent: bytes, name: bytes) -> bytes:
    return blake2b(parent + name, digest_size=16).digest()


def number_of(idt: bytes) -> int:
    return FIRST_HASHED + int.from_bytes(idt[:8], "little") % _SPACE


class InodeTable:
    """Live inodes by number; see the module docstring for the numbering rule.  ``load_raw``
    finds a leaf's packed entry again: ``(directory node id, name) -> Raw | None``."""

    def __init__(self, load_raw: Callable[[str, bytes], Raw | None] | None = None) -> None:
        self._by_ino: dict[int, Inode | Leaf] = {}
        self._probed: dict[bytes, int] = {}
        self._peak = 0
        self._load_raw = load_raw or (lambda oid, name: None)
        for ino, kind in ((ROOT_INO, Kind.ROOT), (DRAFTS_INO, Kind.DRAFTS)):
            node = Inode(ino, kind, ident(kind.name))
            node.lookups = 1
            self._by_ino[ino] = node

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Inode | None:
        """The inode ``ino``; for a leaf, a transient :class:`Inode` with its packed entry
        (``None`` if the manifest cache lost it)."""
        node = self._by_ino.get(ino)
        if type(node) is Leaf:
            return self._expand(node)
        return node  # type: ignore[return-value]

    def _expand(self, leaf: Leaf) -> Inode | None:
        p = leaf.parent
        raw = self._load_raw(p.oid, leaf.name)
        if raw is None:
            return None
        n = Inode(leaf.ino, leaf.kind, leaf.ident)
        n.raw, n.ver, n.lookups, n.dir, n.opened = raw, p.ver, leaf.lookups, p.oid, leaf.opened
        return n

    def mark_opened(self, ino: int) -> None:
        """The file ``ino`` was opened (so the kernel may hold its pages from now on)."""
        node = self._by_ino.get(ino)
        if node is not None:
            node.opened = True

    def find(self, idt: bytes) -> Inode | None:
        """The live (non-leaf) inode with this identity, if any (no count change)."""
        ino = self._probed.get(idt) or number_of(idt)
        node = self._by_ino.get(ino)
        return node if type(node) is Inode and node.ident == idt else None

    def _slot(self, idt: bytes) -> tuple[int, Inode | Leaf | None]:
        """The number for ``idt`` and what is there now: the node with this identity, or
        ``None`` at a free number (probing past a live node of another identity)."""
        base = FIRST_HASHED + int.from_bytes(idt[:8], "little") % _SPACE
        ino = self._probed.get(idt, base) if self._probed else base
        while True:
            node = self._by_ino.get(ino)
            if node is None or node.ident == idt:
                return ino, node
            ino = FIRST_HASHED + (ino - FIRST_HASHED + 1) % _SPACE  # a collision: probe

    def _add(self, ino: int, idt: bytes, node: Inode | Leaf) -> None:
        self._by_ino[ino] = node
        if ino != number_of(idt):
            self._probed[idt] = ino
        if len(self._by_ino) > self._peak:
            self._peak = len(self._by_ino)

    def intern(self, idt: bytes, kind: Kind) -> tuple[Inode, bool]:
        """The inode for an identity, created (with zero lookups) if needed; (node, created)."""
        ino, node = self._slot(idt)
        if type(node) is Inode:
            return node, False
        new = Inode(ino, kind, idt)
        self._add(ino, idt, new)
        return new, True

    def child(self, parent_ident: bytes, name: bytes, kind: Kind) -> tuple[Inode, bool]:
        """:meth:`intern` for the entry ``name`` of a directory inside a version."""
        return self.intern(blake2b(parent_ident + name, digest_size=16).digest(), kind)

    def leaf(self, parent: Inode, name: bytes, kind: Kind) -> tuple[Leaf, bool]:
        """The leaf for the file or symlink ``name`` of a directory inside a version."""
        idt = blake2b(parent.ident + name, digest_size=16).digest()
        ino, node = self._slot(idt)
        if type(node) is Leaf:
            return node, False
        new = Leaf(ino, kind, parent, name)
        self._add(ino, idt, new)
        return new, True

    def drop_if_unused(self, node: Inode | Leaf) -> None:
        """Undo an :meth:`intern` whose entry never reached the kernel."""
        if node.lookups <= 0 and node.ino > DRAFTS_INO:
            self._remove(node)

    def forget(self, ino: int, n: int) -> None:
        node = self._by_ino.get(ino)
        if node is None or node.ino <= DRAFTS_INO:
            return
        node.lookups -= n
        if node.lookups <= 0:
            self._remove(node)

    def _remove(self, node: Inode | Leaf) -> None:
        if self._by_ino.get(node.ino) is node:
            del self._by_ino[node.ino]
        if self._probed:
            self._probed.pop(node.ident, None)
        if self._peak > 65536 and len(self._by_ino) < self._peak // 4:
            self._by_ino = dict(self._by_ino)  # give back the slots of deleted keys
            self._peak = len(self._by_ino)

    def total_lookups(self) -> int:
        """Sum of lookup counts of non-permanent inodes (tests check it returns to zero)."""
        return sum(n.lookups for n in self._by_ino.values() if n.ino > DRAFTS_INO)

    def leaves(self) -> int:
        return sum(1 for n in self._by_ino.values() if type(n) is Leaf)
