"""The LMDB manifest cache of one mount: the only module that imports lmdb.

What it holds, per store (the directory is named after the store URI by the caller):

* ``dirs`` / ``entries`` — the per-directory entry tables of immutable tree nodes, keyed by
  node object id (32 raw bytes) + entry name bytes, so a lookup is one B-tree get and a
  readdir is a cursor scan in name order; a node's whole table is written in one transaction
  together with its ``dirs`` marker, so a table is either complete or absent.  Cached forever:
  an object id names its content.  A split directory's table is all its parts' entries under
  the index node's id, and its ``dirs`` marker lists the parts (for the commit engine).
* ``docs`` — small JSON documents with their own expiry logic in the caller (artifact version
  and alias lists, project/collection listings); they are only a head start after a restart.

What is subtle:

* Reads are cheap enough for the trio thread (one short read transaction, memory mapped);
  writes take LMDB's single writer lock and must run in worker threads.
* Crash safety: LMDB never corrupts on a process crash, but with ``sync=False`` a power loss
  can.  ``state.json`` records the boot id while the cache is open; finding it unclean from an
  earlier boot, or an environment that fails to open, wipes and rebuilds the cache (it is only a
  cache).  A full map drops the entry tables and starts over instead of failing.
* Memory: a split directory's table is written part by part (``WRITE_BATCH`` entries per
  transaction, the ``dirs`` marker last), never whole in memory; ``release_pages`` drops the
  daemon's mapping of pages a big listing touched, ``trim_heap`` the C heap's free pages.
* Values are our own ``marshal`` tuples ("raw" entries): the store's bytes were verified and
  parsed once, on the way in (``model.decode_node``), never again.  The namespace works on the
  raw tuples (no ``Entry`` object per readdir entry) and builds an ``Entry`` only to open a
  file.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import marshal
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lmdb

from ..errors import IntegrityError
from ..model import (
    CHUNK_SIZE,
    Entry,
    Part,
    RefInfo,
    check_part,
    decode_index,
    decode_node,
    is_index,
)

log = logging.getLogger(__name__)
SCHEMA = 2  # 2: split directories (index nodes) record their parts
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as needed
WRITE_BATCH = 16384  # entries of a split directory written per transaction
MADV_DONTNEED = 4
_libc = ctypes.CDLL(None, use_errno=True)


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (after a million-entry listing was
    forgotten, or a big directory loaded, in worker threads' malloc arenas too)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def pack_entry(e: Entry) -> bytes:
    if e.kind == "file":
        t: tuple[Any, ...] = (0, e.size, e.digest, e.chunks, e.executable, e.mtime_ns)
    elif e.kind == "symlink":
        t = (1, e.target, e.mtime_ns)
    elif e.kind == "ref":
        r = e.ref
        assert r is not None
        t = (2, e.size, (r.uri, r.etag, r.version_id, r.sha256, r.mtime_ns, r.checksum),
             e.mtime_ns)
    else:
        t = (3, e.size, e.digest, e.oid, e.count, e.mtime_ns)
    return marshal.dumps(t)


RAW_FILE, RAW_SYMLINK, RAW_REF, RAW_DIR = 0, 1, 2, 3
Raw = tuple[Any, ...]  # a packed entry: (kind, ...) as written by pack_entry


def unpack_entry(data: bytes) -> Entry:
    return entry_from_raw(marshal.loads(data))


def entry_from_raw(t: Raw) -> Entry:
    k = t[0]
    if k == 0:
        return Entry("file", size=t[1], digest=t[2], chunks=t[3], executable=t[4], mtime_ns=t[5])
    if k == 1:
        return Entry("symlink", size=len(t[1].encode("utf-8", "surrogateescape")), target=t[1],
                     mtime_ns=t[2])
    if k == 2:
        uri, etag, vid, sha, rm, ck = t[2]
        info = RefInfo(uri=uri, etag=etag, version_id=vid, sha256=sha, mtime_ns=rm, checksum=ck)
        return Entry("ref", size=t[1], digest=info.key(), ref=info, mtime_ns=t[3])
    return Entry("dir", size=t[1], digest=t[2], oid=t[3], count=t[4], mtime_ns=t[5])


def name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


_HEX = "0123456789abcdef"


def _plain(name: Any, d: Any) -> Raw | None:
    """The packed entry of a plain small file or a directory, validated exactly as
    ``model.decode_node`` would accept it; ``None`` for anything else (or anything doubtful),
    which sends the whole node through ``model.decode_node``."""
    if type(name) is not str or type(d) is not dict or name in ("", ".", "..") \
            or "/" in name or "\0" in name \
            or (len(name) > 63 and len(name.encode("utf-8", "surrogateescape")) > 255):
        return None
    s, dg, m = d.get("s"), d.get("d"), d.get("m", 0)
    # a digest: 64 lowercase hex digits (what model.is_digest checks)
    if type(s) is not int or s < 0 or type(m) is not int or m < 0 or type(dg) is not str \
            or len(dg) != 64 or dg.strip(_HEX):
        return None
    k = d.get("k")
    if k == "f":
        if "c" not in d and s <= CHUNK_SIZE:
            return (RAW_FILE, s, dg, (), bool(d.get("x")), m)
    elif k == "d":
        o, n = d.get("o"), d.get("n")
        if type(o) is str and len(o) == 64 and not o.strip(_HEX) and type(n) is int and n >= 0:
            return (RAW_DIR, s, dg, o, n, m)
    return None


def decode_raw(data: bytes, oid: str) -> list[tuple[bytes, Raw]]:
    """Verify and decode an untrusted tree node into sorted (name, packed entry) pairs.

    Nodes of plain files and directories (nearly all of a big dataset) take a fast path with
    the same checks; any other node goes through ``model.decode_node``, the reference.
    """
    if hashlib.sha256(data).hexdigest() != oid:
        raise IntegrityError(f"tree node {oid} does not match its digest")
    try:
        doc = json.loads(data.decode("utf-8", "surrogateescape"))
        items = doc["e"] if type(doc) is dict and doc.get("v") == 1 else None
        out = []
        for item in items:  # type: ignore[union-attr]
            raw = _plain(item[0], item[1]) if type(item) is list and len(item) == 2 else None
            if raw is None:
                break
            out.append((name_bytes(item[0]), raw))
        else:
            out.sort()
            if all(out[i][0] != out[i + 1][0] for i in range(len(out) - 1)):
                return out
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        pass
    entries = decode_node(data, oid)  # raises IntegrityError naming the problem
    return sorted((name_bytes(n), marshal.loads(pack_entry(e))) for n, e in entries.items())


class ManifestCache:
    """Entry tables of tree nodes and small expiring documents, in one LMDB environment."""

    def __init__(self, directory: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.directory = directory
        self._map_size = map_size
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._state = os.path.join(directory, "state.json")
        self._db_dir = os.path.join(directory, "lmdb")
        if self._needs_rebuild():
            self._wipe("left unclean by a crash of an earlier boot")
        try:
            self._open()
        except lmdb.Error as e:
            self._wipe(f"could not be opened ({e})")
            self._open()
        self._write_state(clean=False)
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------
    def _needs_rebuild(self) -> bool:
        try:
            with open(self._state) as f:
                st = json.load(f)
        except (OSError, ValueError):
            return os.path.exists(self._db_dir)  # db without a state file: unknown, rebuild
        if not isinstance(st, dict) or st.get("schema") != SCHEMA:
            return True
        return not st.get("clean") and st.get("boot") != _boot_id()

    def _wipe(self, why: str) -> None:
        log.warning("manifest cache %s %s: rebuilding it", self._db_dir, why)
        shutil.rmtree(self._db_dir, ignore_errors=True)

    def _open(self) -> None:
        os.makedirs(self._db_dir, mode=0o700, exist_ok=True)
        self.env = lmdb.open(self._db_dir, map_size=self._map_size, max_dbs=4, max_readers=1024,
                             sync=False, metasync=False, readahead=False, lock=True)
        self._dirs = self.env.open_db(b"dirs")
        self._entries = self.env.open_db(b"entries")
        self._docs = self.env.open_db(b"docs")
        with self.env.begin() as txn:  # touch every table: a damaged file fails here
            for db in (self._dirs, self._entries, self._docs):
                txn.stat(db)

    def _write_state(self, clean: bool) -> None:
        tmp = self._state + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"schema": SCHEMA, "boot": _boot_id(), "clean": clean}, f)
        os.replace(tmp, self._state)

    def release_pages(self) -> None:
        """Drop this process's mapping of the cache file's pages: they stay in the kernel's
        page cache and come back on the next access (a minor fault), but stop counting in the
        daemon's RSS (a listing of a million entries touches ~300 MB of them).  Safe for a
        shared file mapping, also while other threads read it; call it on the thread that
        closes the cache (the mapping is found again each time, by its path)."""
        if self._closed:
            return
        path = os.path.realpath(os.path.join(self._db_dir, "data.mdb"))
        try:
            with open("/proc/self/maps") as f:
                spans = [line.split(None, 1)[0] for line in f if line.rstrip().endswith(path)]
        except OSError:
            return
        for span in spans:
            lo, _, hi = span.partition("-")
            start, end = int(lo, 16), int(hi, 16)
            _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED)

    def close(self) -> None:
        """Flush and close; marks the cache clean.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.env.sync(True)
            self.env.close()
        finally:
            self._write_state(clean=True)

    # --- entry tables (reads: any thread) ---------------------------------------------------
    def dir_info(self, oid: str) -> tuple[int, int] | None:
        """(entries, subdirectories) of a cached node, or ``None`` when not cached."""
        with self.env.begin(db=self._dirs) as txn:
            v = txn.get(bytes.fromhex(oid))
        if v is None:
            return None
        info = marshal.loads(v)
        return int(info[0]), int(info[1])

    def index(self, oid: str) -> tuple[bool, list[Part] | None]:
        """(cached, parts): the parts of a cached split directory (``None``: a plain node)."""
        with self.env.begin(db=self._dirs) as txn:
            v = txn.get(bytes.fromhex(oid))
        if v is None:
            return False, None
        info = marshal.loads(v)
        return True, [Part(*p) for p in info[2]] if len(info) > 2 else None

    def entry(self, oid: str, name: bytes) -> Raw | None:
        """The packed entry ``name`` of a cached node (see :func:`entry_from_raw`)."""
        with self.env.begin(db=self._entries) as txn:
            v = txn.get(bytes.fromhex(oid) + name)
        return None if v is None else marshal.loads(v)  # type: ignore[no-any-return]

    def entries(self, oid: str, after: bytes | None, limit: int) -> list[tuple[bytes, Raw]]:
        """Up to ``limit`` (name, packed entry) of a node in name order, after ``after``."""
        prefix = bytes.fromhex(oid)
        plen = len(prefix)
        loads = marshal.loads
        out: list[tuple[bytes, Raw]] = []
        with self.env.begin(db=self._entries) as txn:
            cur = txn.cursor()
            start = prefix + after + b"\0" if after is not None else prefix
            if not cur.set_range(start):
                return out
            for k, v in cur:
                if k[:plen] != prefix or len(out) >= limit:
                    break
                out.append((k[plen:], loads(v)))
        return out

    # --- entry tables (writes: worker threads only) ----------------------------------------
    def put_dir(self, oid: str, entries: Mapping[str, Entry]) -> tuple[int, int]:
        """Store a node's whole entry table atomically; returns its ``dir_info``."""
        return self.put_raw(oid, sorted((name_bytes(n), marshal.loads(pack_entry(e)))
                                        for n, e in entries.items()))

    def put_node(self, oid: str, data: bytes,
                 get_parts: Callable[[list[str]], Iterable[bytes]] | None = None
                 ) -> tuple[int, int]:
        """Verify, decode and store an untrusted tree node (worker threads only).  A split
        directory's parts are read with ``get_parts`` (their bytes, in order, by object id)
        and written as they come, a few thousand entries per transaction, so a directory of
        a million entries never sits whole in memory (nor in one LMDB transaction's dirty
        pages); its ``dirs`` marker goes last, so readers see the table complete or not at
        all (a crash leaves unmarked entries, rewritten by the next load)."""
        if not is_index(data):
            return self.put_raw(oid, decode_raw(data, oid))
        parts = decode_index(data, oid)
        if get_parts is None:
            raise IntegrityError(f"tree node {oid} is split, and its parts can not be read")
        prefix = bytes.fromhex(oid)
        count = dirs = 0
        batch: list[tuple[bytes, Raw]] = []
        for i, (p, part_data) in enumerate(zip(parts, get_parts([p.oid for p in parts]),
                                               strict=True)):
            sub = decode_raw(part_data, p.oid)  # a part is a plain node
            check_part(parts, i, [n for n, _ in sub])
            count += len(sub)
            dirs += sum(1 for _, r in sub if r[0] == RAW_DIR)
            batch.extend(sub)
            if len(batch) >= WRITE_BATCH:
                self._write_entries(prefix, batch)
                batch = []
        self._write_entries(prefix, batch)
        return self.put_raw(oid, [], parts, (count, dirs))

    def _write_entries(self, prefix: bytes, pairs: list[tuple[bytes, Raw]]) -> None:
        """Entries of a node not yet marked in ``dirs`` (invisible until it is)."""
        dumps = marshal.dumps
        items = [(prefix + n, dumps(r)) for n, r in pairs]
        try:
            with self.env.begin(write=True, db=self._entries) as txn:
                txn.cursor().putmulti(items, overwrite=True)
        except lmdb.MapFullError:
            self.clear_trees()
            raise IntegrityError("the manifest cache filled up while loading a directory: "
                                 "it was emptied, try again") from None

    def put_raw(self, oid: str, pairs: list[tuple[bytes, Raw]],
                parts: list[Part] | None = None, info: tuple[int, int] | None = None
                ) -> tuple[int, int]:
        """Store a node's entries and its ``dirs`` marker in one transaction (``info``: the
        entries were written already, by :meth:`put_node`)."""
        prefix = bytes.fromhex(oid)
        if info is None:
            info = (len(pairs), sum(1 for _, r in pairs if r[0] == RAW_DIR))
        marker = marshal.dumps(info if parts is None else
                               (*info, [(p.first, p.oid, p.digest, p.entries, p.size, p.count)
                                        for p in parts]))
        dumps = marshal.dumps
        items = [(prefix + n, dumps(r)) for n, r in pairs]
        for attempt in (0, 1):
            try:
                with self.env.begin(write=True) as txn:
                    if txn.get(prefix, db=self._dirs) is None:
                        cur = txn.cursor(db=self._entries)
                        cur.putmulti(items, overwrite=True)
                        txn.put(prefix, marker, db=self._dirs)
                return info
            except lmdb.MapFullError:
                if attempt or not items:
                    raise
                self.clear_trees()
        return info

    def clear_trees(self) -> None:
        log.warning("manifest cache %s is full: dropping cached trees", self._db_dir)
        with self.env.begin(write=True) as txn:
            txn.drop(self._entries, delete=False)
            txn.drop(self._dirs, delete=False)

    # --- documents ---------------------------------------------------------------------------
    def get_doc(self, key: str) -> Any:
        with self.env.begin(db=self._docs) as txn:
            v = txn.get(key.encode())
        if v is None:
            return None
        try:
            return json.loads(v)
        except ValueError:
            return None

    def put_docs(self, docs: Iterable[tuple[str, Any]]) -> None:
        """Write documents in one transaction (worker threads only)."""
        items = [(k.encode(), json.dumps(d, separators=(",", ":")).encode()) for k, d in docs]
        try:
            with self.env.begin(write=True, db=self._docs) as txn:
                for k, v in items:
                    txn.put(k, v)
        except lmdb.MapFullError:
            self.clear_trees()

    def stats(self) -> dict[str, int]:
        info = self.env.info()
        st = self.env.stat()
        return {"map_used": int(info["last_pgno"]) * int(st["psize"]),
                "dirs": int(self.env.begin().stat(self._dirs)["entries"])}
