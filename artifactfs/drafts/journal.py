"""A draft's overlay on disk: the append-only ``journal`` of tree records, the ``tree.json``
snapshot, and replaying them into the tree after an unmount or a ``kill -9``.

A record is one JSON line with a sequence number ``q`` and, when the change sets its parent
directory's mtime, a time ``t`` (ns).  :class:`~artifactfs.drafts.draft.Draft`
builds every change of its tree out of these records, and applies each with :func:`apply` only
after :meth:`Journal.append` wrote it, so the tree in memory is always what replay gives:

* ``{"o": "set", "p": PATH, "n": NODE}``: put a node (JSON form below) at ``PATH``;
* ``{"o": "del", "p": PATH}``: remove it (a whiteout where the parent has a base directory);
* ``{"o": "mv", "a": SRC, "b": DST}`` / ``{"o": "xchg", "a": A, "b": B}``: move or swap nodes;
* ``{"o": "attr", "p": PATH}`` with ``"x"`` (executable), ``"m"`` (mtime), ``"pm"``
  (permission bits), ``"c"`` (ctime) and/or ``"np": true`` (the staging file is no longer
  pristine).

A record's ``t`` also sets the ctime of the directories it changes, and a ``mv`` or ``xchg``
sets the ctime of the nodes it moves.  Nodes carry ``"pm"`` and ``"c"`` only when set, so
drafts written before these fields existed load unchanged.

What is subtle:

* The format is what drafts already on disk hold: change nothing here without a migration
  (``meta.json`` carries ``drafts.FORMAT``).
* Records only name nodes that are in the overlay: the draft materializes each base directory
  on a path with its own ``set`` record first, so replay never reads the base.
* Each record is one ``write`` on an ``O_APPEND`` descriptor, made before the operation
  replies; a short write (full disk) is cut back off before ``ENOSPC`` is raised, so the
  records after it stay readable.  Durability needs an fsync: :meth:`Journal.dup` gives a
  descriptor to fsync without holding the draft's lock.
* Replay reads the snapshot, then applies only records newer than its ``seq`` (a crash
  between writing ``tree.json`` and emptying the journal leaves records it already holds).
  The first line that is not JSON is taken for a torn write: it ends the journal, and the
  file is cut back to the whole records before it (dropping that line and any after it), so
  new records follow a whole line.  Damaged records that do
  parse raise ``KeyError``/``TypeError``/``ValueError``/``AttributeError``, which the draft
  reports as :class:`~artifactfs.errors.IntegrityError`.
* :class:`Journal` has no lock of its own: the draft's lock guards every call.  When to
  compact is the draft's decision (:data:`~artifactfs.drafts.draft.MIN_COMPACT`).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict
from typing import Any

from .. import model
from ..fsutil import fsync_dir
from .overlay import DirNode, FileNode, LinkNode, Node, oserror, split_path

Record = dict[str, Any]  # one journal line
_encode = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with options builds one per call


def write_json_atomic(path: str, doc: Any) -> None:
    """temp + fsync + rename + fsync(dir): the file holds the old or the new document."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(doc, separators=(",", ":")).encode("utf-8", "surrogateescape"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8", "surrogateescape"))


# --- the JSON form of overlay nodes (in "set" records and in the snapshot) -------------------

def entry_json(e: model.Entry | None) -> dict[str, Any] | None:
    return None if e is None else asdict(e)


def entry_from(d: dict[str, Any] | None) -> model.Entry | None:
    if d is None:
        return None
    ref = model.RefInfo(**d["ref"]) if d.get("ref") else None
    return model.Entry(**{**d, "chunks": tuple(d["chunks"]), "ref": ref})


def node_json(n: Node | None) -> dict[str, Any] | None:
    if n is None:
        return None
    out: dict[str, Any]
    if isinstance(n, FileNode):
        out = {"k": "f", "i": n.ident.hex(), "e": entry_json(n.entry), "s": n.staged,
               "x": n.executable, "m": n.mtime_ns, "p": n.pristine}
    elif isinstance(n, LinkNode):
        out = {"k": "l", "i": n.ident.hex(), "t": n.target, "m": n.mtime_ns}
    else:
        out = {"k": "d", "i": n.ident.hex(), "b": entry_json(n.base), "m": n.mtime_ns,
               "o": {k: node_json(v) for k, v in n.over.items()}}
    if not isinstance(n, LinkNode) and n.mode is not None:
        out["pm"] = n.mode
    if n.ctime_ns:
        out["c"] = n.ctime_ns
    return out


def node_from(d: dict[str, Any] | None) -> Node | None:
    if d is None:
        return None
    i, c = bytes.fromhex(d["i"]), d.get("c", 0)
    if d["k"] == "f":
        p = d.get("p")
        return FileNode(i, entry_from(d["e"]), d["s"], d["x"], d["m"],
                        (p[0], p[1]) if p else None, d.get("pm"), c)
    if d["k"] == "l":
        return LinkNode(i, d["t"], d["m"], c)
    return DirNode(i, entry_from(d["b"]), d["m"], {k: node_from(v) for k, v in d["o"].items()},
                   d.get("pm"), c)


# --- applying records ------------------------------------------------------------------------

def apply(root: DirNode, op: Record) -> None:
    """Apply one record to the tree under ``root``, live or in replay."""
    kind, t = op["o"], op.get("t", 0)
    if kind == "attr":
        n = _over_node(root, op["p"])
        if "x" in op and isinstance(n, FileNode):
            n.executable = op["x"]
        if "m" in op:
            n.mtime_ns = op["m"]
        if "pm" in op and not isinstance(n, LinkNode):
            n.mode = op["pm"]
        if "c" in op:
            n.ctime_ns = op["c"]
        if op.get("np") and isinstance(n, FileNode):
            n.pristine = None
        return
    parent, name = _over_parent(root, op["a"] if kind in ("mv", "xchg") else op["p"])
    if kind == "set":
        parent.over[name] = node_from(op["n"])
    elif kind == "del":
        if parent.base is None:
            parent.over.pop(name, None)
        else:
            parent.over[name] = None
    elif kind == "mv":
        node = parent.over[name]
        apply(root, {"o": "del", "p": op["a"], "t": t})
        dparent, dname = _over_parent(root, op["b"])
        dparent.over[dname] = node
        _touch(dparent, t)
        if node is not None and t:
            node.ctime_ns = t
    elif kind == "xchg":
        dparent, dname = _over_parent(root, op["b"])
        parent.over[name], dparent.over[dname] = dparent.over[dname], parent.over[name]
        _touch(dparent, t)
        for node in (parent.over[name], dparent.over[dname]):
            if node is not None and t:
                node.ctime_ns = t
    else:
        raise KeyError(kind)
    _touch(parent, t)


def _touch(d: DirNode, t: int) -> None:
    """A change of ``d``'s entries at time ``t`` (0: a record without one)."""
    if t:
        d.mtime_ns = d.ctime_ns = t


def _over_node(root: DirNode, path: str) -> Node:
    """A node that is in the overlay (records only ever name those)."""
    node: Node | None = root
    for part in split_path(path):
        if not isinstance(node, DirNode):
            raise KeyError(path)
        node = node.over[part]
    if node is None:
        raise KeyError(path)
    return node


def _over_parent(root: DirNode, path: str) -> tuple[DirNode, str]:
    head, _, name = path.rpartition("/")
    parent = _over_node(root, head)
    if not isinstance(parent, DirNode) or not name:
        raise KeyError(path)
    return parent, name


# --- the files -------------------------------------------------------------------------------

class Journal:
    """The ``journal`` and ``tree.json`` of one draft directory.  Guarded by the draft's lock.

    :meth:`open` then :meth:`replay` on load, :meth:`append` for every change, :meth:`snapshot`
    to compact; :meth:`close` leaves it ready to be opened again.
    """

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.seq = 0  # of the last record written or replayed
        self._fd = -1

    def open(self) -> None:
        self._fd = os.open(os.path.join(self.dir, "journal"),
                           os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def replay(self, root: DirNode) -> DirNode:
        """The tree: the snapshot's (``root`` when there is none) with newer records applied."""
        seq, snap = 0, os.path.join(self.dir, "tree.json")
        if os.path.exists(snap):
            doc = read_json(snap)
            seq, node = doc["seq"], node_from(doc["root"])
            if not isinstance(node, DirNode):
                raise TypeError("snapshot root is not a directory")
            root = node
        data, good = os.pread(self._fd, os.fstat(self._fd).st_size, 0), 0
        for line in data.split(b"\n")[:-1]:
            try:
                op = json.loads(line)
            except ValueError:
                break  # a torn last record (power loss): everything before it stands
            if op["q"] > seq:
                apply(root, op)
                seq = op["q"]
            good += len(line) + 1
        if good < len(data):
            os.ftruncate(self._fd, good)
        self.seq = seq
        return root

    def append(self, op: Record) -> None:
        """Number ``op`` and write it (one ``write``); the caller applies it afterwards."""
        self.seq += 1
        op["q"] = self.seq
        data = _encode(op).encode() + b"\n"
        n = os.write(self._fd, data)
        if n < len(data):  # a full disk: take the piece back so later records stay readable
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - n)
            raise oserror(errno.ENOSPC, self.dir)

    def snapshot(self, root: DirNode) -> None:
        """Write the whole overlay as ``tree.json`` and empty the journal."""
        doc = {"seq": self.seq, "root": node_json(root)}
        write_json_atomic(os.path.join(self.dir, "tree.json"), doc)
        os.ftruncate(self._fd, 0)

    def dup(self) -> int:
        """A descriptor of the journal to fsync once the lock is released (close it)."""
        return os.dup(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
