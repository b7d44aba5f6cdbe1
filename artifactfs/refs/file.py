"""``file://`` references: files and directory trees on a local or network file system.

Recorded (``checksum=True``): size, ``mtime_ns`` and the SHA-256 of the content.  Recorded
(``checksum=False``): the URI and the size only.

What is subtle:

* A file can change without its size or mtime changing (``touch -d``, ``rsync -t`` into a new
  inode), so with a checksum the whole file is hashed before its first byte is served.  The
  result is memoized per process under (path, dev, inode, size, mtime, **ctime**): ctime can
  not be set by users, so any later rewrite or replacement invalidates the memo and the file is
  hashed again.  Mismatches are memoized too, so a changed 10 GiB file is not re-hashed for
  every chunk the cache asks for.  Concurrent readers of one file hash it once (single-flight).
* A read opens the file once (a :class:`Source`) and uses that descriptor for the checks, the
  hash and the ``pread``; an ``fstat`` after each read catches a writer racing with it.
* Reads never follow the path blindly: :func:`open_path` walks it with localfs.py, so a link
  swapped in after logging is followed only under its rules (:func:`trust_for`), and a daemon
  serving other users opens it with the reader's identity (authority.py).  Logging
  (:func:`expand`) runs in the logger's own process and follows links as usual.
* A download hashes while it copies and fails (leaving nothing behind) on a mismatch, so a
  file that changed since it was logged is never reconstructed with other bytes.
* With ``checksum=False`` only the size is checked: it is what the mount reports as
  ``st_size``, and a source of another size cannot fill the reads the cache will make.
* URIs are ``file:///abs/path`` (host empty or ``localhost``).  The path is percent-decoded;
  ``?`` and ``#`` are plain path characters.  URIs this module produces for the members of a
  directory are percent-encoded, so any file name round-trips.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from typing import BinaryIO

from ..errors import NotFound, PermissionDenied, ReferenceChanged, UsageError
from ..model import Entry, RefInfo, ref_entry
from . import _common, localfs

_MEMO_MAX = 4096
_memo: OrderedDict[tuple[object, ...], bool] = OrderedDict()
_memo_lock = threading.Lock()
_key_locks: dict[tuple[object, ...], threading.Lock] = {}


def path_of(uri: str) -> str:
    """The local path named by a ``file://`` URI."""
    if not uri.startswith("file://"):
        raise UsageError(f"not a file:// URI: {uri!r}")
    rest = uri[len("file://"):]
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost") or not slash:
        raise UsageError(f"invalid file URI {uri!r}: use file:///absolute/path")
    return os.fsdecode(urllib.parse.unquote_to_bytes("/" + path))


def uri_of(path: str) -> str:
    """A ``file://`` URI for an absolute local path (percent-encoded)."""
    return "file://" + urllib.parse.quote(os.fsencode(path), safe="/")


# --- expand --------------------------------------------------------------------------------


def expand(uri: str, name: str | None, checksum: bool, max_objects: int) -> list[tuple[str, Entry]]:
    try:
        return _expand(uri, name, checksum, max_objects)
    except OSError as e:  # unreadable file or directory, I/O error
        raise UsageError(f"cannot read reference {uri}: {e}") from None


def _expand(uri: str, name: str | None, checksum: bool, max_objects: int) -> list[tuple[str, Entry]]:
    path = path_of(uri)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"reference source not found: {uri}") from None
    if stat.S_ISREG(st.st_mode):
        base = os.path.basename(path.rstrip("/"))
        return [(_common.single_path(uri, name, base), _entry(path, checksum))]
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"reference {uri} is neither a regular file nor a directory")
    members = _list_dir(uri, path, max_objects)
    return [(_common.member_path(name, rel), _entry(full, checksum)) for rel, full in members]


def _list_dir(uri: str, root: str, max_objects: int) -> list[tuple[str, str]]:
    """(relative path, full path) of every regular file below ``root``, sorted.

    Symlinks to files are followed (their target's bytes are referenced); symlinks to
    directories are not descended, so a loop cannot make the walk endless.
    """
    out: list[tuple[str, str]] = []

    def fail(e: OSError) -> None:
        raise e

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames.sort()
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            try:
                if not stat.S_ISREG(os.stat(full).st_mode):
                    continue  # fifos, sockets, devices, dangling links: not content
            except FileNotFoundError:
                continue
            out.append((os.path.relpath(full, root), full))
            if len(out) > max_objects:
                raise _common.too_many(uri, max_objects)
    return sorted(out)


def _entry(path: str, checksum: bool) -> Entry:
    """Stat (and hash) one file; retried when the file changes while it is hashed."""
    uri = uri_of(os.path.abspath(path))
    for _ in range(3):
        fd = _open(uri, path, missing=NotFound)
        try:
            st = os.fstat(fd)
            if not checksum:
                return ref_entry(RefInfo(uri=uri, checksum=False), st.st_size, st.st_mtime_ns)
            digest = _hash_fd(fd)
            if _ident(os.fstat(fd)) != _ident(st):
                continue
        finally:
            os.close(fd)
        info = RefInfo(uri=uri, sha256=digest, mtime_ns=st.st_mtime_ns)
        _remember((path_of(uri), digest, *_ident(st)), True)  # reads right after logging: no re-hash
        return ref_entry(info, st.st_size, st.st_mtime_ns)
    raise UsageError(f"reference {uri} keeps changing while it is read; try again when it is stable")


# --- reading -------------------------------------------------------------------------------


def trust_for(info: RefInfo, uid: int) -> Callable[[os.stat_result], bool]:
    """Which symbolic links a read of ``info`` by ``uid`` may follow (see localfs.py): any,
    when the bytes are verified against a recorded checksum; else only root's and the
    reader's own, so a swapped-in link can not make the reader read his own files for
    whoever logged the reference."""
    if info.checksum and info.sha256 is not None:
        return lambda st: True
    return lambda st: st.st_uid in (0, uid)


def open_path(uri: str, path: str, trust: Callable[[os.stat_result], bool],
              root: str = "/") -> int:
    """:func:`localfs.open_regular`, its errors in our terms: PermissionDenied for what the
    reader may not read or the rules refuse, ReferenceChanged for a source that is gone."""
    try:
        return localfs.open_regular(path, trust, root)
    except (FileNotFoundError, NotADirectoryError):
        raise ReferenceChanged(uri, "the file no longer exists") from None
    except IsADirectoryError:
        raise ReferenceChanged(uri, "now a directory") from None
    except PermissionError:
        raise PermissionDenied(f"reference {uri} is not readable by this user") from None
    except localfs.Refused as e:
        raise PermissionDenied(f"reference {uri} is refused: {e}") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EINVAL, errno.ESTALE):
            raise ReferenceChanged(uri, e.strerror or str(e)) from None
        raise


class Source:
    """One opened ``file://`` source, checked against its record when opened (type, size,
    mtime); with a checksum, hashed before its first byte is served (memoized per file
    identity).  Reads use this descriptor only and fail once the file's identity changes."""

    def __init__(self, info: RefInfo, size: int, fd: int) -> None:
        self.info, self.size, self.fd = info, size, fd
        try:
            self.st = _check_stat(info, size, fd)
        except BaseException:
            os.close(fd)
            raise
        self._verified = not (info.checksum and info.sha256 is not None)
        self._nowait = True

    def verify(self) -> None:
        if not self._verified:
            _ensure_verified(self.info, path_of(self.info.uri), self.fd, self.st)
            self._verified = True

    def read(self, offset: int, length: int) -> bytes:
        n = _common.clip(self.size, offset, length)
        if n == 0:
            return b""
        self.verify()
        data = _pread_all(self.fd, n, offset)
        if _ident(os.fstat(self.fd)) != _ident(self.st):
            raise ReferenceChanged(self.info.uri, "modified while it was read")
        return _common.check_length(self.info.uri, data, n)

    def read_nowait(self, offset: int, length: int, scratch: memoryview) -> memoryview | None:
        """:meth:`read` into ``scratch`` when it can not block (for an event loop): the file
        verified, on a file system that supports ``RWF_NOWAIT`` (local ones; there ``fstat``
        of an open file does no I/O either) and the bytes in the page cache; else ``None``.
        (A reused buffer: a fresh one per read costs ~8x the read itself.)"""
        if not self._verified or not self._nowait:
            return None
        n = _common.clip(self.size, offset, length)
        out = scratch[:n]
        try:
            got = os.preadv(self.fd, [out], offset, os.RWF_NOWAIT) if n else 0
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._nowait = False  # NFS and the like: every read goes to a worker thread
            return None
        if got != n:
            return None
        if _ident(os.fstat(self.fd)) != _ident(self.st):
            raise ReferenceChanged(self.info.uri, "modified while it was read")
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_own(info: RefInfo, size: int) -> Source:
    """The source opened with this process's own rights (``get``, the API, a daemon serving
    only its own user), through :func:`open_path`."""
    path = path_of(info.uri)
    return Source(info, size, open_path(info.uri, path, trust_for(info, os.geteuid())))


def read_range(info: RefInfo, size: int, offset: int, length: int) -> bytes:
    with open_own(info, size) as src:
        return src.read(offset, length)


def download(info: RefInfo, size: int, out: BinaryIO) -> None:
    with open_own(info, size) as src:
        h = hashlib.sha256()
        done = 0
        while True:
            buf = os.pread(src.fd, _common.PIECE, done)
            if not buf:
                break
            h.update(buf)
            out.write(buf)
            done += len(buf)
        if _ident(os.fstat(src.fd)) != _ident(src.st) or done != size:
            raise ReferenceChanged(info.uri, "modified while it was read")
    if info.checksum and info.sha256 is not None and h.hexdigest() != info.sha256:
        raise ReferenceChanged(info.uri, "content does not match the recorded checksum")


def verify_whole(info: RefInfo, size: int) -> None:
    """Check the whole file against its recorded identity now (memoized); raise if changed."""
    with open_own(info, size) as src:
        src.verify()


def _open(uri: str, path: str, missing: type[Exception] = ReferenceChanged) -> int:
    """Open a file being logged (the logger's own process: links are followed)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        if missing is NotFound:
            raise NotFound(f"reference source not found: {uri}") from None
        raise ReferenceChanged(uri, "the file no longer exists") from None
    except IsADirectoryError:
        raise ReferenceChanged(uri, "now a directory") from None


def _check_stat(info: RefInfo, size: int, fd: int) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ReferenceChanged(info.uri, "no longer a regular file")
    if st.st_size != size:
        raise ReferenceChanged(info.uri, f"size is {st.st_size}, was {size}")
    if info.checksum and info.mtime_ns is not None and st.st_mtime_ns != info.mtime_ns:
        raise ReferenceChanged(info.uri, "modification time changed")
    return st


def _ident(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _ensure_verified(info: RefInfo, path: str, fd: int, st: os.stat_result) -> None:
    """Hash the whole file once per identity (single-flight) and compare with the record."""
    key = (path, info.sha256, *_ident(st))
    with _memo_lock:
        ok = _memo.get(key)
        if ok is None:
            lock = _key_locks.setdefault(key, threading.Lock())
    if ok is None:
        with lock:
            with _memo_lock:
                ok = _memo.get(key)
            if ok is None:
                try:
                    digest = _hash_fd(fd)
                    if _ident(os.fstat(fd)) != _ident(st):
                        raise ReferenceChanged(info.uri, "modified while it was verified")
                    ok = digest == info.sha256
                    _remember(key, ok)
                finally:
                    with _memo_lock:
                        _key_locks.pop(key, None)
    else:
        with _memo_lock:
            if key in _memo:
                _memo.move_to_end(key)
    if not ok:
        raise ReferenceChanged(info.uri, "content does not match the recorded checksum")


def _remember(key: tuple[object, ...], ok: bool) -> None:
    with _memo_lock:
        _memo[key] = ok
        while len(_memo) > _MEMO_MAX:
            _memo.popitem(last=False)


def _hash_fd(fd: int) -> str:
    h = hashlib.sha256()
    off = 0
    while True:
        buf = os.pread(fd, _common.PIECE, off)
        if not buf:
            return h.hexdigest()
        h.update(buf)
        off += len(buf)


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        buf = os.pread(fd, n - got, offset + got)
        if not buf:
            break
        parts.append(buf)
        got += len(buf)
    return b"".join(parts)


def clear_memo() -> None:
    """Forget every verification result (tests; or after a known rewrite of sources)."""
    with _memo_lock:
        _memo.clear()
