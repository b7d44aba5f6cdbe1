"""Verified reads of stored content, and downloads of whole versions to local directories.

Every piece (blob or chunk) read from the store is hashed and compared with the digest the
tree recorded before any byte of it is used; a mismatch is an :class:`IntegrityError` naming
the object.  Downloads write each file to a temp name next to its destination and rename it
into place once every piece is verified, so an interrupted ``get`` never leaves a file with
wrong bytes under its real name, and never writes outside the chosen root.  Given a
:class:`dlcache.Reuse`, files already in place are kept and pieces found on this node are
copied (verified) instead of fetched (see dlcache.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from . import model, refs, tree
from .dlcache import Reuse, finish_file
from .errors import IntegrityError, NotFound, UsageError
from .store.base import Store

Progress = Callable[[int], None]
log = logging.getLogger(__name__)


def read_piece(store: Store, digest: str, length: int | None = None) -> bytes:
    """The verified bytes of one stored blob or chunk."""
    key = model.object_key(digest)
    try:
        data = store.get(key)
    except NotFound:
        raise IntegrityError(f"object {digest} is missing from the store") from None
    if (length is not None and len(data) != length) or hashlib.sha256(data).hexdigest() != digest:
        raise IntegrityError(f"object {digest} is corrupt (digest mismatch)")
    return data


def read_range(store: Store, entry: model.Entry, offset: int, length: int) -> bytes:
    """Verified bytes [offset, offset+length) of a file or reference entry."""
    end = min(entry.size, offset + length)
    if offset >= end:
        return b""
    if entry.kind == "ref":
        return refs.read_range(entry, offset, end - offset)
    out = bytearray()
    for digest, off, ln in entry.chunk_spans():
        if off + ln <= offset or off >= end:
            continue
        data = read_piece(store, digest, ln)
        out += data[max(0, offset - off): end - off]
    return bytes(out)


def _safe_dir(root: str, rel_dir: str) -> str:
    """Create ``rel_dir`` under ``root`` refusing to go through symlinks or outside root."""
    cur = root
    for part in [p for p in rel_dir.split("/") if p]:
        nxt = os.path.join(cur, part)
        try:
            st = os.lstat(nxt)
            if not stat.S_ISDIR(st.st_mode):
                raise UsageError(f"refusing to write through non-directory {nxt}")
        except FileNotFoundError:
            os.mkdir(nxt, 0o755)
        cur = nxt
    return cur


def download_file(store: Store, entry: model.Entry, dest: str, progress: Progress | None = None,
                  pool: ThreadPoolExecutor | None = None, reuse: Reuse | None = None) -> None:
    """Write one file/reference entry to ``dest`` (temp + verify + rename); with ``reuse``,
    keep ``dest`` if it already holds the entry and take pieces found locally."""
    if reuse is not None and reuse.in_place(entry, dest):
        if progress is not None:
            progress(entry.size)
        return
    tmp = f"{dest}.artifactfs-tmp-{os.getpid()}"
    if entry.kind == "ref":
        refs.download_to(entry, tmp)
        if reuse is not None:
            reuse.fetched(entry.size)
        if progress is not None:
            progress(entry.size)
    else:
        local = reuse.sources(entry, dest) if reuse is not None else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            def one(span: tuple[str, int, int]) -> None:
                data = local.piece(*span) if local is not None else None
                if data is None:
                    data = read_piece(store, span[0], span[2])
                    if reuse is not None:
                        reuse.fetched(len(data))
                os.pwrite(fd, data, span[1])
                if progress is not None:
                    progress(len(data))

            spans = entry.chunk_spans()
            if pool is not None and len(spans) > 1:
                list(pool.map(one, spans))
            else:
                for s in spans:
                    one(s)
            os.ftruncate(fd, entry.size)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        finally:
            if local is not None:
                local.close()
        os.close(fd)
    finish_file(tmp, entry)
    os.replace(tmp, dest)
    if reuse is not None:
        reuse.written(dest, entry)


def _tolerant(store: Store, entry: model.Entry, dest: str, progress: Progress | None,
              pool: ThreadPoolExecutor | None, reuse: Reuse | None) -> None:
    """download_file for a reference that may be missing (``allow_missing_references``)."""
    try:
        download_file(store, entry, dest, progress, pool, reuse)
    except (NotFound, IntegrityError) as e:
        log.warning("skipping %s: %s", entry.ref.uri if entry.ref else dest, e)


def select(load: model.Loader, root_oid: str, path_prefix: str | None) -> Iterator[tuple[str, model.Entry]]:
    """Entries of a version whose path starts with ``path_prefix`` (a string prefix, as in W&B)."""
    for path, e in tree.walk(load, root_oid):
        if not path_prefix or path.startswith(path_prefix) or (
                e.kind == "dir" and path_prefix.startswith(path + "/")):
            yield path, e


def download_tree(store: Store, load: model.Loader, root_oid: str, dest_root: str,
                  path_prefix: str | None = None, progress: Progress | None = None,
                  threads: int = 8, reuse: Reuse | None = None,
                  skip_missing_refs: bool = False) -> int:
    """Download a version (or the part under a prefix) into ``dest_root``; returns file count.
    With ``reuse``, content already on this node is not fetched again (dlcache.py); with
    ``skip_missing_refs``, references whose source is gone or changed are left out (logged)."""
    os.makedirs(dest_root, exist_ok=True)
    root = os.path.realpath(dest_root)
    n = 0
    with ThreadPoolExecutor(threads, thread_name_prefix="get") as pool, \
            ThreadPoolExecutor(threads, thread_name_prefix="get-file") as files:
        futs = []
        for path, e in select(load, root_oid, path_prefix):
            parent, _, base = path.rpartition("/")
            if e.kind == "dir":
                if e.count == 0 and not load(e.oid):
                    _safe_dir(root, path)
                continue
            d = _safe_dir(root, parent)
            dest = os.path.join(d, base)
            if e.kind == "symlink":
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.symlink(e.target, dest)
                n += 1
                continue
            if os.path.islink(dest):
                os.unlink(dest)
            job = _tolerant if skip_missing_refs and e.kind == "ref" else download_file
            futs.append(files.submit(job, store, e, dest, progress, pool, reuse))
            n += 1
        for f in futs:
            f.result()
    return n
