"""Pure data model: entries, Merkle tree nodes, their canonical encoding and digests. No I/O.

A version is a tree of nodes.  Each node is one directory: a mapping of names to entries,
encoded as canonical JSON (sorted by UTF-8 bytes, no whitespace).  Two digests matter:

* the **object id** of a node: SHA-256 of its encoded bytes; it is the store key, so any node
  fetched from the store is verified by hashing it;
* the **content digest** of a node: SHA-256 of the encoding with mtimes left out and child
  directories named by *their* content digests.  A version's digest is its root's content
  digest, so the same files under the same paths give the same digest whenever they were
  written ("no new version when the content did not change").

Files up to :data:`CHUNK_SIZE` are one blob whose digest is SHA-256 of the bytes.  Larger files
are a list of chunk blobs; their digest is SHA-256 over the chunk digests (see
:func:`chunked_digest`), so ingest hashes each byte once and any byte range can be fetched and
verified on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import IntegrityError, InvalidName
from .names import check_component, check_path

CHUNK_SIZE = 8 * 1024 * 1024
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
HEX = frozenset("0123456789abcdef")

Kind = Literal["file", "symlink", "ref", "dir"]


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def chunked_digest(chunks: Iterable[str]) -> str:
    """Digest of a file stored as chunks: SHA-256 of a header plus the chunk digests."""
    h = hashlib.sha256(b"artifactfs.chunks.v1\n")
    for c in chunks:
        h.update(bytes.fromhex(c))
    return h.hexdigest()


def object_key(digest: str) -> str:
    """Store key of a content-addressed object (blob, chunk or tree node)."""
    return f"objects/sha256/{digest[:2]}/{digest[2:]}"


def is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= HEX


@dataclass(frozen=True, slots=True)
class RefInfo:
    """What the source said of a reference when it was logged (SPEC §7)."""

    uri: str
    etag: str | None = None
    version_id: str | None = None
    sha256: str | None = None  # content digest, when known (file:// with checksum)
    mtime_ns: int | None = None
    checksum: bool = True

    def key(self) -> str:
        """A digest naming exactly this recorded identity (cache key for its bytes)."""
        return sha256_hex(json.dumps(_ref_dict(self), sort_keys=True).encode())


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a tree node.

    file: ``size``, ``digest``, optional ``chunks``, ``executable``, ``mtime_ns``.
    symlink: ``target``.  ref: ``size``, ``ref``.  dir: ``oid`` (node object id), ``digest``
    (node content digest), ``size`` and ``count`` (bytes and files below it).
    """

    kind: Kind
    size: int = 0
    digest: str = ""
    chunks: tuple[str, ...] = ()
    executable: bool = False
    mtime_ns: int = 0
    target: str = ""
    ref: RefInfo | None = None
    oid: str = ""
    count: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    def chunk_spans(self) -> list[tuple[str, int, int]]:
        """(digest, offset, length) of each stored piece of a file's content."""
        if not self.chunks:
            return [(self.digest, 0, self.size)] if self.size else []
        out = []
        for i, c in enumerate(self.chunks):
            off = i * CHUNK_SIZE
            out.append((c, off, min(CHUNK_SIZE, self.size - off)))
        return out

    @property
    def file_count(self) -> int:
        return self.count if self.kind == "dir" else 1


def file_entry(
    size: int, digest: str, chunks: Iterable[str] = (), executable: bool = False, mtime_ns: int = 0
) -> Entry:
    return Entry("file", size=size, digest=digest, chunks=tuple(chunks),
                 executable=executable, mtime_ns=mtime_ns)


def symlink_entry(target: str, mtime_ns: int = 0) -> Entry:
    return Entry("symlink", size=len(target.encode("utf-8", "surrogateescape")),
                 target=target, mtime_ns=mtime_ns)


def ref_entry(info: RefInfo, size: int, mtime_ns: int = 0) -> Entry:
    return Entry("ref", size=size, digest=info.key(), ref=info, mtime_ns=mtime_ns)


def _ref_dict(r: RefInfo) -> dict[str, Any]:
    d: dict[str, Any] = {"u": r.uri}
    if r.etag is not None:
        d["e"] = r.etag
    if r.version_id is not None:
        d["vi"] = r.version_id
    if r.sha256 is not None:
        d["h"] = r.sha256
    if r.mtime_ns is not None:
        d["rm"] = r.mtime_ns
    if not r.checksum:
        d["nc"] = 1
    return d


def _entry_dict(e: Entry, content: bool) -> dict[str, Any]:
    d: dict[str, Any]
    if e.kind == "file":
        d = {"k": "f", "s": e.size, "d": e.digest}
        if e.chunks:
            d["c"] = list(e.chunks)
        if e.executable:
            d["x"] = 1
    elif e.kind == "symlink":
        d = {"k": "l", "t": e.target}
    elif e.kind == "ref":
        assert e.ref is not None
        d = {"k": "r", "s": e.size, "r": _ref_dict(e.ref)}
    else:
        d = {"k": "d", "d": e.digest, "s": e.size, "n": e.count}
        if not content:
            d["o"] = e.oid
    if not content and e.mtime_ns:
        d["m"] = e.mtime_ns
    return d


def _bad(msg: str) -> IntegrityError:
    return IntegrityError(f"malformed tree node: {msg}")


def _int(d: Mapping[str, Any], k: str, default: int | None = None) -> int:
    v = d.get(k, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _bad(f"field {k!r} is not a non-negative integer")
    return v


def _digest(d: Mapping[str, Any], k: str) -> str:
    v = d.get(k)
    if not is_digest(v):
        raise _bad(f"field {k!r} is not a digest")
    assert isinstance(v, str)
    return v


def _opt_str(d: Mapping[str, Any], k: str) -> str | None:
    v = d.get(k)
    if v is not None and not isinstance(v, str):
        raise _bad(f"field {k!r} is not a string")
    return v


def _decode_entry(d: Any) -> Entry:
    if not isinstance(d, dict):
        raise _bad("entry is not an object")
    kind = d.get("k")
    m = _int(d, "m", 0)
    if kind == "f":
        size = _int(d, "s")
        chunks = d.get("c", [])
        if not isinstance(chunks, list) or not all(is_digest(c) for c in chunks):
            raise _bad("bad chunk list")
        digest = _digest(d, "d")
        if chunks:
            n = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
            if len(chunks) != n or chunked_digest(chunks) != digest:
                raise _bad("chunk list does not match size or digest")
        elif size > CHUNK_SIZE:
            raise _bad("large file without chunks")
        return Entry("file", size=size, digest=digest, chunks=tuple(chunks),
                     executable=bool(d.get("x")), mtime_ns=m)
    if kind == "l":
        t = d.get("t")
        if not isinstance(t, str) or not t or "\0" in t:
            raise _bad("bad symlink target")
        return symlink_entry(t, m)
    if kind == "r":
        r = d.get("r")
        if not isinstance(r, dict) or not isinstance(r.get("u"), str):
            raise _bad("bad reference")
        rm = r.get("rm")
        if rm is not None and (not isinstance(rm, int) or isinstance(rm, bool)):
            raise _bad("bad reference mtime")
        h = r.get("h")
        if h is not None and not is_digest(h):
            raise _bad("bad reference checksum")
        info = RefInfo(uri=r["u"], etag=_opt_str(r, "e"), version_id=_opt_str(r, "vi"),
                       sha256=h, mtime_ns=rm, checksum=not r.get("nc"))
        return ref_entry(info, _int(d, "s"), m)
    if kind == "d":
        return Entry("dir", size=_int(d, "s"), digest=_digest(d, "d"), oid=_digest(d, "o"),
                     count=_int(d, "n"), mtime_ns=m)
    raise _bad(f"unknown entry kind {kind!r}")


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode(
        "utf-8", "surrogateescape")


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Node:
    """An encoded tree node ready for the store."""

    data: bytes
    oid: str
    digest: str
    size: int
    count: int

    def as_entry(self, mtime_ns: int = 0) -> Entry:
        return Entry("dir", size=self.size, digest=self.digest, oid=self.oid, count=self.count,
                     mtime_ns=mtime_ns)


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')  # what json.dumps escapes with ensure_ascii=False


def _entry_json(e: Entry, content: bool) -> str:
    """Canonical JSON of one entry, written by hand for files and dirs (the hot cases).

    Equal, byte for byte, to ``_canon(_entry_dict(e, content))``; a unit test checks it.
    Digests are validated hex, so they need no escaping.
    """
    if e.kind == "file":
        out = ['{"c":[' + ",".join(f'"{c}"' for c in e.chunks) + "]," if e.chunks else "{",
               f'"d":"{e.digest}","k":"f"']
        if not content and e.mtime_ns:
            out.append(f',"m":{e.mtime_ns}')
        out.append(f',"s":{e.size}')
        out.append(',"x":1}' if e.executable else "}")
        return "".join(out)
    if e.kind == "dir":
        m = f',"m":{e.mtime_ns}' if not content and e.mtime_ns else ""
        o = "" if content else f',"o":"{e.oid}"'
        return f'{{"d":"{e.digest}","k":"d"{m},"n":{e.count}{o},"s":{e.size}}}'
    return json.dumps(_entry_dict(e, content), separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True)


def encode_node(entries: Mapping[str, Entry]) -> Node:
    """Canonically encode one directory's entries; computes both digests and totals."""
    names = sorted(entries, key=_sort_key)
    full_parts, content_parts = [], []
    for n in names:
        q = json.dumps(n, ensure_ascii=False) if _NEEDS_ESCAPE.search(n) else f'"{n}"'
        e = entries[n]
        full_parts.append(f"[{q},{_entry_json(e, False)}]")
        content_parts.append(f"[{q},{_entry_json(e, True)}]")
    full, content = ",".join(full_parts), ",".join(content_parts)
    data = f'{{"e":[{full}],"v":1}}'.encode("utf-8", "surrogateescape")
    cdata = f'{{"e":[{content}],"v":1}}'.encode("utf-8", "surrogateescape")
    size = count = 0
    for e in entries.values():
        if e.kind == "dir":
            size += e.size
            count += e.count
        else:
            count += 1
            if e.kind != "symlink":
                size += e.size
    return Node(data=data, oid=sha256_hex(data), digest=sha256_hex(cdata), size=size,
                count=count)


EMPTY_NODE = encode_node({})


def decode_node(data: bytes, oid: str | None = None) -> dict[str, Entry]:
    """Decode (and, given ``oid``, verify) a node from untrusted bytes."""
    if oid is not None and sha256_hex(data) != oid:
        raise IntegrityError(f"tree node {oid} does not match its digest")
    try:
        doc = json.loads(data.decode("utf-8", "surrogateescape"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(str(e)) from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("e"), list):
        raise _bad("not a version-1 node")
    out: dict[str, Entry] = {}
    for item in doc["e"]:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
            raise _bad("entry is not [name, entry]")
        name = item[0]
        try:
            check_component(name, "entry name")
        except InvalidName as e:
            raise _bad(str(e)) from None
        if name in out:
            raise _bad(f"duplicate name {name!r}")
        out[name] = _decode_entry(item[1])
    return out


# --- walking, diffing and path-copying updates over a loader -------------------------------

Loader = Callable[[str], Mapping[str, Entry]]  # node oid -> entries
Saver = Callable[[Node], None]


def walk(load: Loader, oid: str, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Depth-first (path, entry) for every entry below node ``oid``; dirs before contents."""
    for name, e in sorted(load(oid).items(), key=lambda kv: _sort_key(kv[0])):
        path = f"{prefix}{name}"
        yield path, e
        if e.kind == "dir":
            yield from walk(load, e.oid, path + "/")


def lookup(load: Loader, root: str, path: str) -> Entry | None:
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


def _same_content(a: Entry, b: Entry) -> bool:
    return _entry_dict(a, True) == _entry_dict(b, True)


def diff(load: Loader, old: str, new: str, prefix: str = "", out: Diff | None = None) -> Diff:
    """Files (and symlinks, refs, empty dirs) added, removed and changed from ``old`` to ``new``.

    Subtrees with equal content digests are skipped, so the cost follows the change.
    """
    out = out if out is not None else Diff()
    a, b = load(old), load(new)
    for name in sorted(set(a) | set(b), key=_sort_key):
        ea, eb, path = a.get(name), b.get(name), prefix + name
        if ea is not None and eb is not None and _same_content(ea, eb):
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


def _leaves(load: Loader, e: Entry, path: str, acc: list[str]) -> None:
    if e.kind != "dir":
        acc.append(path)
        return
    sub = load(e.oid)
    if not sub:
        acc.append(path + "/")
    for name, child in sorted(sub.items(), key=lambda kv: _sort_key(kv[0])):
        _leaves(load, child, f"{path}/{name}", acc)


def apply_changes(
    load: Loader, save: Saver, root: str | None, changes: Mapping[str, Entry | None]
) -> Node:
    """Path-copying update: set (or, for ``None``, remove) entries at paths below ``root``.

    Only nodes on changed paths are re-encoded and saved; everything else is shared with the
    base.  Intermediate directories are created as needed; removing a path that is absent is
    a no-op.  A directory entry given as a change replaces the whole subtree.
    """
    by_head: dict[str, dict[str, Entry | None]] = {}
    direct: dict[str, Entry | None] = {}
    for path, e in changes.items():
        check_path(path)
        head, sep, rest = path.partition("/")
        if sep:
            by_head.setdefault(head, {})[rest] = e
        else:
            direct[head] = e
    entries = dict(load(root)) if root else {}
    for name, e in direct.items():
        if e is None:
            entries.pop(name, None)
        else:
            entries[name] = e
    for head, sub in by_head.items():
        cur = entries.get(head)
        base = cur.oid if cur is not None and cur.kind == "dir" else None
        if base is None and all(v is None for v in sub.values()):
            continue
        node = apply_changes(load, save, base, sub)
        entries[head] = node.as_entry(cur.mtime_ns if cur is not None and cur.is_dir else 0)
    node = encode_node(entries)
    save(node)
    return node


def with_mtime(e: Entry, mtime_ns: int) -> Entry:
    return replace(e, mtime_ns=mtime_ns)
