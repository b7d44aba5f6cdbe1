"""Pure data model: entries, Merkle tree nodes, their canonical encoding and digests. No I/O.

A version is a tree of nodes.  Each node is one directory: a mapping of names to entries,
encoded as canonical JSON (sorted by UTF-8 bytes, no whitespace).  Two digests matter:

* the **object id** of a node: SHA-256 of its encoded bytes; it is the store key, so any node
  fetched from the store is verified by hashing it;
* the **content digest** of a node: SHA-256 of the encoding with mtimes left out and child
  directories named by *their* content digests.  A version's digest is its root's content
  digest, so the same files under the same paths give the same digest whenever they were
  written ("no new version when the content did not change").

A directory of more than :data:`SPLIT_AT` entries is stored as an **index node** over **parts**:
ordinary nodes holding consecutive runs of its entries in name order.  A part ends after every
name whose hash says so (content-defined, about :data:`PART_AVG` entries a part), so the split
is a function of the names alone: the same entries always give the same nodes and digests, and
a change rewrites only the parts around it (a commit that changes one file of a 50 000-entry
directory re-encodes ~1 000 entries, not 50 000).  Loaders hand out the whole directory; only
``pathcopy.apply_changes`` works part by part.

Files up to :data:`CHUNK_SIZE` are one blob whose digest is SHA-256 of the bytes.  Larger files
are a list of chunk blobs; their digest is SHA-256 over the chunk digests (see
:func:`chunked_digest`), so ingest hashes each byte once and any byte range can be fetched and
verified on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .errors import IntegrityError, InvalidName
from .names import check_component

CHUNK_SIZE = 8 * 1024 * 1024
SPLIT_AT = 4096  # a directory with more entries than this is an index node over parts
PART_AVG = 1024  # a part ends after a name whose hash is 0 modulo this: ~1 000 entries a part
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


def sort_key(name: str) -> bytes:
    """Names sort by their UTF-8 bytes (the canonical order of entries)."""
    return name.encode("utf-8", "surrogateescape")



def same_content(a: Entry, b: Entry) -> bool:
    """Whether two entries have the same content (mtimes and node ids aside)."""
    return _entry_dict(a, True) == _entry_dict(b, True)


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a split directory, as its index node lists it."""

    first: str  # the part's first name
    oid: str
    digest: str  # content digest of the part node
    entries: int  # names in the part
    size: int
    count: int


@dataclass(frozen=True, slots=True)
class Node:
    """An encoded tree node ready for the store.

    For an index node, ``index`` lists all its parts and ``parts`` holds the part nodes that
    were (re-)encoded with it: a saver stores those first (:func:`node_objects`).
    """

    data: bytes
    oid: str
    digest: str
    size: int
    count: int
    parts: tuple[Node, ...] = ()
    index: tuple[Part, ...] = ()

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
    """Canonically encode one directory's entries; computes both digests and totals.

    More than :data:`SPLIT_AT` entries give an index node whose parts come with it."""
    names = sorted(entries, key=sort_key)
    if len(names) <= SPLIT_AT:
        return _encode_leaf(names, entries)
    runs = _split(names)
    nodes = tuple(_encode_leaf(run, entries) for run in runs)
    return _encode_index([_part(run, nd) for run, nd in zip(runs, nodes, strict=True)], nodes)


def _ends_part(name: str) -> bool:
    h = hashlib.sha256(sort_key(name)).digest()
    return int.from_bytes(h[:4], "big") % PART_AVG == 0


def _split(names: Sequence[str]) -> list[list[str]]:
    """Sorted names cut into parts: each ends after a name that ends a part, or at the end."""
    out: list[list[str]] = []
    cur: list[str] = []
    for n in names:
        cur.append(n)
        if _ends_part(n):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _part(names: Sequence[str], node: Node) -> Part:
    return Part(names[0], node.oid, node.digest, len(names), node.size, node.count)


def _quote(name: str) -> str:
    return json.dumps(name, ensure_ascii=False) if _NEEDS_ESCAPE.search(name) else f'"{name}"'


def _encode_index(parts: Sequence[Part], new: tuple[Node, ...]) -> Node:
    full = ",".join(f'[{_quote(p.first)},{{"d":"{p.digest}","n":{p.count},"o":"{p.oid}",'
                    f'"s":{p.size},"t":{p.entries}}}]' for p in parts)
    content = ",".join(f'[{_quote(p.first)},{{"d":"{p.digest}","n":{p.count},"s":{p.size},'
                       f'"t":{p.entries}}}]' for p in parts)
    data = f'{{"p":[{full}],"v":1}}'.encode("utf-8", "surrogateescape")
    cdata = f'{{"p":[{content}],"v":1}}'.encode("utf-8", "surrogateescape")
    return Node(data=data, oid=sha256_hex(data), digest=sha256_hex(cdata),
                size=sum(p.size for p in parts), count=sum(p.count for p in parts), parts=new,
                index=tuple(parts))


def index_node(parts: Sequence[Part]) -> Node:
    """The index node over ``parts`` (without their part nodes)."""
    return _encode_index(parts, ())


def node_objects(node: Node) -> Iterator[tuple[str, bytes]]:
    """(oid, bytes) to store for ``node``: its new parts first, then the node itself."""
    for p in node.parts:
        yield p.oid, p.data
    yield node.oid, node.data


def _encode_leaf(names: Sequence[str], entries: Mapping[str, Entry]) -> Node:
    full_parts, content_parts = [], []
    size = count = 0
    for n in names:
        q = _quote(n)
        e = entries[n]
        full_parts.append(f"[{q},{_entry_json(e, False)}]")
        content_parts.append(f"[{q},{_entry_json(e, True)}]")
        if e.kind == "dir":
            size += e.size
            count += e.count
        else:
            count += 1
            if e.kind != "symlink":
                size += e.size
    full, content = ",".join(full_parts), ",".join(content_parts)
    data = f'{{"e":[{full}],"v":1}}'.encode("utf-8", "surrogateescape")
    cdata = f'{{"e":[{content}],"v":1}}'.encode("utf-8", "surrogateescape")
    return Node(data=data, oid=sha256_hex(data), digest=sha256_hex(cdata), size=size,
                count=count)


EMPTY_NODE = encode_node({})


def _node_doc(data: bytes, oid: str | None, key: str) -> dict[str, Any]:
    """Verify ``data`` against ``oid`` (if given) and parse it as a version-1 node whose list
    is under ``key`` (``e``: entries, ``p``: parts of an index node)."""
    if oid is not None and sha256_hex(data) != oid:
        raise IntegrityError(f"tree node {oid} does not match its digest")
    try:
        doc = json.loads(data.decode("utf-8", "surrogateescape"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(str(e)) from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get(key), list):
        raise _bad("not a version-1 node" if key == "e" else "not a version-1 index node")
    return doc


def decode_node(data: bytes, oid: str | None = None) -> dict[str, Entry]:
    """Decode (and, given ``oid``, verify) a node from untrusted bytes."""
    doc = _node_doc(data, oid, "e")
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


def is_index(data: bytes) -> bool:
    """Whether node bytes are an index node (canonical JSON puts ``"p"`` first)."""
    return data.startswith(b'{"p":')


def decode_index(data: bytes, oid: str | None = None) -> list[Part]:
    """Decode (and, given ``oid``, verify) an index node from untrusted bytes."""
    doc = _node_doc(data, oid, "p")
    if not doc["p"]:
        raise _bad("an index node without parts")
    out: list[Part] = []
    for item in doc["p"]:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) \
                or not isinstance(item[1], dict):
            raise _bad("part is not [first name, part]")
        try:
            check_component(item[0], "entry name")
        except InvalidName as e:
            raise _bad(str(e)) from None
        d = item[1]
        part = Part(item[0], _digest(d, "o"), _digest(d, "d"), _int(d, "t"), _int(d, "s"),
                    _int(d, "n"))
        if part.entries < 1 or (out and sort_key(out[-1].first) >= sort_key(part.first)):
            raise _bad("parts out of order")
        out.append(part)
    return out


def check_part(parts: Sequence[Part], i: int, names: Sequence[bytes]) -> None:
    """Part ``i`` of an index holds ``names`` (sorted name bytes): as many as the index says,
    the first one it names, none at or past the next part's first (so joined parts stay
    sorted and unique).  Both joiners (here and the mount's manifest cache) call it."""
    p = parts[i]
    hi = sort_key(parts[i + 1].first) if i + 1 < len(parts) else None
    if len(names) != p.entries or names[0] != sort_key(p.first) \
            or (hi is not None and names[-1] >= hi):
        raise _bad(f"part {p.oid} does not hold what its index says")


def merge_parts(parts: Sequence[Part], load_part: Loader) -> dict[str, Entry]:
    """A split directory's entries: every part loaded, checked against the index and joined."""
    out: dict[str, Entry] = {}
    for i, p in enumerate(parts):
        sub = load_part(p.oid)
        check_part(parts, i, sorted(sort_key(n) for n in sub))
        out.update(sub)
    return out


# --- path-copying updates over a loader (pathcopy.py; walking and diffing: tree.py) -------

Loader = Callable[[str], Mapping[str, Entry]]  # node oid -> entries
Saver = Callable[[Node], None]  # stores node_objects(node)
Indexer = Callable[[str], Sequence[Part] | None]  # node oid -> its parts (None: not split)



def with_mtime(e: Entry, mtime_ns: int) -> Entry:
    return replace(e, mtime_ns=mtime_ns)
