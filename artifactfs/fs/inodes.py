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

Inodes inside drafts are keyed on a per-draft-object nonce plus the draft node's own identity
(``drafts.Info.ident``), which survives renames and copy-up; a discarded draft re-created under
the same name gets a new nonce, so its inodes get new numbers.
"""

from __future__ import annotations

import enum
import hashlib
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
    __slots__ = ("_entry", "attrs", "d", "ident", "ino", "kind", "lookups", "name", "project",
                 "raw", "target", "ver")

    def __init__(self, ino: int, kind: Kind, ident: bytes) -> None:
        # one of these per entry listed: keep it to plain attribute stores
        self.ino = ino
        self.kind = kind
        self.ident = ident
        self.lookups = 0
        self.ver: VersionInfo | None = None
        self.raw: Raw | None = None  # content inodes: the packed entry (see cache.py)
        self._entry: Entry | None = None
        self.attrs: object = None  # the kernel attributes, cached for immutable inodes
        self.project = self.name = self.target = ""  # virtual inodes; alias target "vN"
        self.d: Any = None  # inodes inside a draft: where they are (see fs/draftops.py)

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
    """Live inodes by number; see the module docstring for the numbering rule."""

    def __init__(self) -> None:
        self._by_ino: dict[int, Inode] = {}
        self._probed: dict[bytes, int] = {}
        for ino, kind in ((ROOT_INO, Kind.ROOT), (DRAFTS_INO, Kind.DRAFTS)):
            node = Inode(ino, kind, ident(kind.name))
            node.lookups = 1
            self._by_ino[ino] = node

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Inode | None:
        return self._by_ino.get(ino)

    def find(self, idt: bytes) -> Inode | None:
        """The live inode with this identity, if any (no count change)."""
        ino = self._probed.get(idt) or number_of(idt)
        node = self._by_ino.get(ino)
        return node if node is not None and node.ident == idt else None

    def intern(self, idt: bytes, kind: Kind) -> tuple[Inode, bool]:
        """The inode for an identity, created (with zero lookups) if needed; (node, created)."""
        base = FIRST_HASHED + int.from_bytes(idt[:8], "little") % _SPACE
        ino = self._probed.get(idt, base) if self._probed else base
        node = self._by_ino.get(ino)
        if node is None:
            node = self._by_ino[ino] = Inode(ino, kind, idt)
            return node, True
        if node.ident == idt:
            return node, False
        while True:  # a collision of two live identities: probe for a free number
            ino = FIRST_HASHED + (ino - FIRST_HASHED + 1) % _SPACE
            node = self._by_ino.get(ino)
            if node is None:
                node = self._by_ino[ino] = Inode(ino, kind, idt)
                self._probed[idt] = ino
                return node, True
            if node.ident == idt:
                return node, False

    def child(self, parent_ident: bytes, name: bytes, kind: Kind) -> tuple[Inode, bool]:
        """:meth:`intern` for the entry ``name`` of a directory inside a version."""
        return self.intern(blake2b(parent_ident + name, digest_size=16).digest(), kind)

    def drop_if_unused(self, node: Inode) -> None:
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

    def _remove(self, node: Inode) -> None:
        if self._by_ino.get(node.ino) is node:
            del self._by_ino[node.ino]
        self._probed.pop(node.ident, None)

    def total_lookups(self) -> int:
        """Sum of lookup counts of non-permanent inodes (tests check it returns to zero)."""
        return sum(n.lookups for n in self._by_ino.values() if n.ino > DRAFTS_INO)
