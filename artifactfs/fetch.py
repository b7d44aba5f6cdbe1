"""Verified reads of stored content, and downloads of whole versions to local directories.

Every piece (blob or chunk) read from the store is hashed and compared with the digest the
tree recorded before any byte of it is used; a mismatch is an :class:`IntegrityError` naming
the object.

Downloads (:func:`download_tree`) write each file under a short random name in a temp
directory at the destination root and rename it into place once every piece is verified, so
temp names always fit NAME_MAX (whatever the real name's length) and a failed or interrupted
``get`` leaves no partial file under a real name (and, unless killed, no temp directory).
Directories are opened one component at a time relative to the root with ``O_NOFOLLOW``: a
symlink planted in the destination is never followed out of it, and trees deeper than
PATH_MAX work.  Walks are iterative and bounded (tree.py), files in flight are bounded, so
memory does not follow the size of the version.  Given a :class:`dlcache.Reuse`, files
already in place are kept and pieces found on this node are copied (verified) instead of
fetched (see dlcache.py).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from . import model, refs, tree
from .dlcache import Reuse, finish_file
from .errors import IntegrityError, NotFound, UsageError
from .store.base import Store

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


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
    """Create ``rel_dir`` under ``root`` refusing to go through symlinks or outside root (for
    one file's download; download_tree opens directories relative to the root instead)."""
    cur = root
    for part in [p for p in rel_dir.split("/") if p]:
        nxt = os.path.join(cur, part)
        try:
            if not stat.S_ISDIR(os.lstat(nxt).st_mode):
                raise UsageError(f"refusing to write through non-directory {nxt}")
        except FileNotFoundError:
            os.mkdir(nxt, 0o755)
        cur = nxt
    return cur


MAX_PENDING = 256  # files downloaded ahead of the one being renamed into place
TMP_PREFIX = ".artifactfs-tmp-"


def _temp_name() -> str:
    return os.urandom(8).hex()


def _write_file(store: Store, entry: model.Entry, path: str, progress: Progress | None,
                pool: ThreadPoolExecutor | None, reuse: Reuse | None = None,
                dest: str = "") -> None:
    """Write a file or reference entry's verified bytes to the new file ``path`` (its mode and
    mtime set); on failure nothing is left at ``path``.  With ``reuse``, pieces are taken from
    local copies (``dest``'s old content among them) where they are found."""
    if entry.kind == "ref":
        refs.download_to(entry, path)
        if reuse is not None:
            reuse.fetched(entry.size)
        if progress is not None:
            progress(entry.size)
    else:
        local = reuse.sources(entry, dest) if reuse is not None and dest else None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
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
            os.unlink(path)
            raise
        finally:
            if local is not None:
                local.close()
        os.close(fd)
    finish_file(path, entry)


def download_file(store: Store, entry: model.Entry, dest: str, progress: Progress | None = None,
                  pool: ThreadPoolExecutor | None = None, reuse: Reuse | None = None) -> None:
    """Write one file/reference entry to ``dest`` (temp with a short name next to it, verify,
    rename); with ``reuse``, keep ``dest`` if it already holds the entry and take pieces
    found locally."""
    if reuse is not None and reuse.in_place(entry, dest):
        if progress is not None:
            progress(entry.size)
        return
    tmp = os.path.join(os.path.dirname(dest) or ".", TMP_PREFIX + _temp_name())
    _write_file(store, entry, tmp, progress, pool, reuse, dest)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    if reuse is not None:
        reuse.written(dest, entry)


def _fetch_job(store: Store, entry: model.Entry, tmp: str, dest: str,
               progress: Progress | None, pool: ThreadPoolExecutor, reuse: Reuse | None,
               tolerant: bool) -> bool:
    """One file of download_tree (a worker thread): False when nothing is to be renamed into
    place (already there, or a missing reference skipped)."""
    if reuse is not None and reuse.in_place(entry, dest):
        if progress is not None:
            progress(entry.size)
        return False
    try:
        _write_file(store, entry, tmp, progress, pool, reuse, dest)
    except (NotFound, IntegrityError) as e:
        if not tolerant:
            raise
        log.warning("skipping %s: %s", entry.ref.uri if entry.ref else dest, e)
        return False
    return True


class _Dest:
    """The destination root: directories opened relative to it, component by component,
    never through a symlink; a temp directory for files in flight."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self.tmp = os.path.join(root, TMP_PREFIX + _temp_name())
        os.mkdir(self.tmp, 0o700)
        self.tmp_fd = os.open(self.tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self._dirs: OrderedDict[str, int] = OrderedDict()  # rel dir -> open fd

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self.tmp_fd)
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.close(self.root_fd)

    def dir_fd(self, rel: str) -> int:
        """The directory ``rel`` below the root, made as needed (an fd this object owns)."""
        if not rel:
            return self.root_fd
        fd = self._dirs.get(rel)
        if fd is not None:
            self._dirs.move_to_end(rel)
            return fd
        cur, done = self.root_fd, ""
        names = rel.split("/")
        for i in range(len(names) - 1, 0, -1):  # the nearest ancestor already open
            anc = "/".join(names[:i])
            if anc in self._dirs:
                cur, done, names = self._dirs[anc], anc, names[i:]
                break
        for name in names:
            done = f"{done}/{name}" if done else name
            with _refusing(os.path.join(self.root, done)):
                try:
                    os.mkdir(name, 0o755, dir_fd=cur)
                except FileExistsError:
                    pass
                cur = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=cur)
            self._dirs[done] = cur
            if len(self._dirs) > 64:
                os.close(self._dirs.popitem(last=False)[1])
        return cur

    def place(self, tmp: str, path: str) -> None:
        """Rename temp file ``tmp`` to ``path`` (replacing a file or symlink there)."""
        parent, _, base = path.rpartition("/")
        with _refusing(os.path.join(self.root, path)):
            os.replace(tmp, base, src_dir_fd=self.tmp_fd, dst_dir_fd=self.dir_fd(parent))

    def symlink(self, path: str, target: str) -> None:
        parent, _, base = path.rpartition("/")
        fd = self.dir_fd(parent)
        with _refusing(os.path.join(self.root, path)):
            try:
                os.unlink(base, dir_fd=fd)
            except FileNotFoundError:
                pass
            os.symlink(target, base, dir_fd=fd)


@contextmanager
def _refusing(path: str) -> Iterator[None]:
    """OS errors of writing through or over something that is not a directory or a file become
    one clear error."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            raise UsageError(f"refusing to write through or over a non-file at {path}") from None
        raise


def select(load: model.Loader, root_oid: str, path_prefix: str | None
           ) -> Iterator[tuple[str, model.Entry]]:
    """Entries of a version whose path starts with ``path_prefix`` (a string prefix, as in
    W&B), directories before their contents, reading only the nodes that can hold them."""
    return tree.stream(tree.plain_opener(load), root_oid, path_prefix or None, dirs=True)


def download_tree(store: Store, open_node: tree.Opener, root_oid: str, dest_root: str,
                  path_prefix: str | None = None, progress: Progress | None = None,
                  threads: int = 8, reuse: Reuse | None = None,
                  skip_missing_refs: bool = False, want: tuple[int, int] | None = None) -> int:
    """Download a version (or the part under a prefix) into ``dest_root``; returns the number
    of files and symlinks.  With ``reuse``, content already on this node is not fetched again
    (dlcache.py); with ``skip_missing_refs``, references whose source is gone or changed are
    left out (logged).  ``want``: the root's totals as its record declares them."""
    os.makedirs(dest_root, exist_ok=True)
    dest = _Dest(os.path.realpath(dest_root))
    n = 0
    window: deque[tuple[Future[bool], str, str, model.Entry]] = deque()

    def place() -> None:
        fut, tmp, path, e = window.popleft()
        if fut.result():
            dest.place(tmp, path)
            if reuse is not None:
                reuse.written(os.path.join(dest.root, path), e)

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="get") as pool, \
                ThreadPoolExecutor(threads, thread_name_prefix="get-file") as files:
            try:
                for path, e in tree.stream(open_node, root_oid, path_prefix or None, want=want):
                    if e.kind == "dir":
                        dest.dir_fd(path)  # an empty directory
                        continue
                    n += 1
                    if e.kind == "symlink":
                        dest.symlink(path, e.target)
                        continue
                    tmp = _temp_name()
                    tolerant = skip_missing_refs and e.kind == "ref"
                    window.append((files.submit(
                        _fetch_job, store, e, os.path.join(dest.tmp, tmp),
                        os.path.join(dest.root, path), progress, pool, reuse, tolerant),
                        tmp, path, e))
                    while window and (len(window) >= MAX_PENDING or window[0][0].done()):
                        place()
                while window:
                    place()
            except BaseException:
                for fut, _, _, _ in window:
                    fut.cancel()
                raise
    finally:
        dest.close()
    return n
