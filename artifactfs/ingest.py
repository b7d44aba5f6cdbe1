"""Ingest: hash, chunk and store local files in one pass, in parallel, with bounded memory.

Every file is cut into pieces of at most :data:`model.CHUNK_SIZE`; each piece is read once
(``pread``), hashed and handed to the store with :meth:`Store.put_object`, so identical files
and chunks are stored once.  Pieces of all files go through one thread pool (as many threads
as the store wants requests in flight: 32 on S3) with at most :data:`MAX_INFLIGHT_BYTES` read
and not yet stored, which keeps memory bounded whatever the input and uses every core even
for a single 5 GiB file.  Results are entries keyed by artifact path; trees are built from
them with :func:`pathcopy.apply_changes` (nodes only on changed paths when there is a base).

What is subtle: whether to look before writing.  On S3 a write of content that exists costs
its whole body (answered 412), a look (HEAD) only a request; a look at content that does not
exist is a wasted request.  So a piece is looked up first when it is *likely present*: its
digest is one a source names as already stored (``Source.known``: what the base version has
at that path, so a re-commit of unchanged content sends no bytes), or most recent pieces of
this ingest turned out to exist (:class:`_Presence`, a moving estimate, so a tree put again
under a new name soon stops sending bodies, and a fresh upload does not pay for looks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from . import model, pathcopy
from .errors import NotFound, UsageError
from .names import check_path
from .store.base import Store

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
MAX_INFLIGHT_BYTES = 96 * 1024 * 1024
BATCH_FILES = 64
BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Source:
    """One local file (or symlink, or empty directory) to ingest at an artifact path."""

    path: str  # artifact path
    local: str  # local filesystem path
    kind: str  # "file", "symlink", "dir"
    size: int = 0
    mtime_ns: int = 0
    executable: bool = False
    target: str = ""
    dev: int = 0  # files: the stat identity the digest hints of statcache.py are keyed on
    ino: int = 0
    ctime_ns: int = 0
    known: frozenset[str] = frozenset()  # piece digests known to be stored (e.g. the base's)


def _source(apath: str, local: str, st: os.stat_result, follow: bool) -> Source | None:
    mode = st.st_mode
    if stat.S_ISLNK(mode) and not follow:
        return Source(apath, local, "symlink", mtime_ns=st.st_mtime_ns, target=os.readlink(local))
    if stat.S_ISREG(mode):
        return Source(apath, local, "file", size=st.st_size, mtime_ns=st.st_mtime_ns,
                      executable=bool(mode & 0o111), dev=st.st_dev, ino=st.st_ino,
                      ctime_ns=st.st_ctime_ns)
    if stat.S_ISDIR(mode):
        return Source(apath, local, "dir", mtime_ns=st.st_mtime_ns)
    log.warning("skipping %s: not a regular file, directory or symlink", local)
    return None


def scan(local: str, name: str | None = None, follow_symlinks: bool = False) -> Iterator[Source]:
    """Sources for a local file or directory tree, placed under artifact path ``name``.

    A directory's contents go under ``name`` (or at the root when ``name`` is None); a single
    file is stored as ``name`` (default: its basename).  Empty directories are kept.
    """
    try:
        st = os.stat(local) if follow_symlinks else os.lstat(local)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {local}") from None
    if stat.S_ISDIR(st.st_mode):
        prefix = check_path(name) + "/" if name else ""
        yield from _scan_dir(local, prefix, follow_symlinks, {(st.st_dev, st.st_ino)})
        return
    apath = check_path(name or os.path.basename(os.path.abspath(local)))
    src = _source(apath, local, st, follow_symlinks)
    if src is None:
        raise UsageError(f"not a regular file, directory or symlink: {local}")
    yield src


def _listing(local: str) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(local), key=lambda e: e.name)
    except PermissionError:
        raise UsageError(f"permission denied: {local}") from None


def _scan_dir(local: str, prefix: str, follow: bool, seen: set[tuple[int, int]]) -> Iterator[Source]:
    """Sources below a directory in path order; an explicit stack, whatever the depth."""
    first = _listing(local)
    stack = [(iter(first), prefix, seen)]
    if not first and prefix:
        yield Source(prefix.rstrip("/"), local, "dir", mtime_ns=os.stat(local).st_mtime_ns)
    while stack:
        it, pfx, chain = stack[-1]
        e = next(it, None)
        if e is None:
            stack.pop()
            continue
        apath = check_path(pfx + e.name)
        try:
            st = e.stat(follow_symlinks=follow)
        except FileNotFoundError:
            if follow and e.is_symlink():
                raise UsageError(f"broken symlink: {e.path}") from None
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in chain:
                raise UsageError(f"symlink loop at {e.path}")
            sub = _listing(e.path)
            if not sub:
                yield Source(apath, e.path, "dir", mtime_ns=st.st_mtime_ns)
            stack.append((iter(sub), apath + "/", chain | {key}))
            continue
        src = _source(apath, e.path, st, follow)
        if src is not None:
            yield src


def default_threads(store: Store) -> int:
    """The store's ``io_threads`` (requests it wants in flight), else one per core."""
    return max(1, int(getattr(store, "io_threads", 0)) or max(2, os.cpu_count() or 2))


class _Budget:
    """Bytes read and not yet stored, across the pool's threads: at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._cond = threading.Condition()

    def take(self, n: int) -> int:
        n = min(n, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class _Presence:
    """A moving estimate of how often this ingest's pieces already exist in the store."""

    RATE = 1 / 8

    def __init__(self) -> None:
        self.p = 0.45  # a fresh upload is the common case: write first until told otherwise

    def likely(self, size: int) -> bool:
        """Look before writing?  A look costs one request; writing content that exists costs
        its bytes, which for a big piece is worth many requests."""
        return self.p * (1 + size / (256 << 10)) > 1

    def saw(self, existed: bool) -> None:
        self.p += self.RATE * (float(existed) - self.p)  # a data race loses an update at worst


class _Pieces:
    """Collects the chunk digests of one file as its pieces complete."""

    def __init__(self, src: Source) -> None:
        self.src = src
        n = max(1, (src.size + model.CHUNK_SIZE - 1) // model.CHUNK_SIZE)
        self.digests: list[str | None] = [None] * n
        self.left = n

    def entry(self) -> model.Entry:
        s = self.src
        if s.size <= model.CHUNK_SIZE:
            digest = self.digests[0]
            assert digest is not None
            return model.file_entry(s.size, digest, (), s.executable, s.mtime_ns)
        chunks = [d for d in self.digests if d is not None]
        return model.file_entry(s.size, model.chunked_digest(chunks), chunks, s.executable,
                                s.mtime_ns)


def _read_piece(src: Source, off: int, want: int) -> bytes:
    fd = os.open(src.local, os.O_RDONLY)
    try:
        data = os.pread(fd, want, off) if want > 0 else b""
        while len(data) < want:  # short reads happen on some filesystems
            more = os.pread(fd, want - len(data), off + len(data))
            if not more:
                raise UsageError(f"file shrank while being read: {src.local}")
            data += more
    finally:
        os.close(fd)
    return data


class _Writer:
    """What the pool's threads share: the store, the byte budget, the presence estimate."""

    def __init__(self, store: Store, progress: Progress | None) -> None:
        self.store, self.progress = store, progress
        self.budget = _Budget(MAX_INFLIGHT_BYTES)
        self.presence = _Presence()

    def piece(self, src: Source, index: int) -> str:
        off = index * model.CHUNK_SIZE
        want = max(0, min(model.CHUNK_SIZE, src.size - off))
        held = self.budget.take(want)
        try:
            data = _read_piece(src, off, want)
            digest = hashlib.sha256(data).hexdigest()
            known = digest in src.known
            likely = known or self.presence.likely(len(data))
            wrote = self.store.put_object(model.object_key(digest), data, likely_present=likely)
            if not known:
                self.presence.saw(not wrote)
        finally:
            self.budget.give(held)
        if self.progress is not None:
            self.progress(len(data))
        return digest

    def job(self, job: list[tuple[_Pieces, int]]) -> list[str]:
        return [self.piece(p.src, i) for p, i in job]


def store_files(
    store: Store, sources: Iterable[Source], progress: Progress | None = None,
    threads: int | None = None,
) -> dict[str, model.Entry]:
    """Ingest sources; returns artifact path -> entry (directories only when empty).

    Each chunk of a big file is one job for the pool; small files go in batches of up to
    :data:`BATCH_FILES` (or :data:`BATCH_BYTES`), so a tree of many tiny files does not pay
    a thread hand-off per file; with many threads (a remote store, where a request costs far
    more than a hand-off) batches are smaller, so that many requests are in flight.
    """
    threads = threads or default_threads(store)
    batch_files = max(1, BATCH_FILES * 2 // threads)  # many requests in flight: small batches
    writer = _Writer(store, progress)
    out: dict[str, model.Entry] = {}
    lock = threading.Lock()
    inflight: set[Future[list[str]]] = set()
    batch: list[tuple[_Pieces, int]] = []
    batch_bytes = 0

    def reap() -> None:
        nonlocal inflight
        done, pending = wait(inflight, return_when=FIRST_COMPLETED)
        inflight = set(pending)
        for f in done:
            f.result()  # re-raise worker errors

    def submit(job: list[tuple[_Pieces, int]]) -> None:
        while len(inflight) >= threads * 2:
            reap()
        fut = pool.submit(writer.job, job)

        def done(f: Future[list[str]]) -> None:
            if f.exception() is not None:
                return
            with lock:
                for (p, i), digest in zip(job, f.result(), strict=True):
                    p.digests[i] = digest
                    p.left -= 1
                    if p.left == 0:
                        out[p.src.path] = p.entry()

        fut.add_done_callback(done)
        inflight.add(fut)

    with ThreadPoolExecutor(threads, thread_name_prefix="ingest") as pool:
        try:
            for src in sources:
                if src.kind == "symlink":
                    out[src.path] = model.symlink_entry(src.target, src.mtime_ns)
                    continue
                if src.kind == "dir":
                    out[src.path] = model.EMPTY_NODE.as_entry(src.mtime_ns)
                    continue
                pieces = _Pieces(src)
                if src.size <= BATCH_BYTES:
                    batch.append((pieces, 0))
                    batch_bytes += src.size
                    if len(batch) >= batch_files or batch_bytes >= BATCH_BYTES:
                        submit(batch)
                        batch, batch_bytes = [], 0
                    continue
                for i in range(len(pieces.digests)):
                    submit([(pieces, i)])
            if batch:
                submit(batch)
            while inflight:
                reap()
        except BaseException:
            for f in inflight:
                f.cancel()
            raise
    return out


def build_tree(save: model.Saver, load: model.Loader, base_root: str | None,
               changes: Mapping[str, model.Entry | None],
               index: model.Indexer | None = None) -> model.Node:
    """The root node of ``base`` with ``changes`` applied (a fresh tree when no base).

    Empty directories in ``changes`` refer to the empty node, which is saved here.  With
    ``index``, split directories are updated part by part.
    """
    save(model.EMPTY_NODE)
    if not changes:
        node = model.encode_node(load(base_root)) if base_root else model.EMPTY_NODE
        save(node)
        return node
    return pathcopy.apply_changes(load, save, base_root, changes, index)
