"""The directory store: the embedded default and the test double of every other store.

Keys are relative paths under the root.  Put-if-absent writes a temp file and ``link``s it
into place (the link fails if the key exists), so a crash never leaves a partial value;
content-addressed objects are simply renamed into place (a racer can only write the same
bytes).
Compare-and-swap takes a per-key ``fcntl`` lock, compares etags and renames a temp file over
the record.  An etag is ``mtime_ns-size-ino``; a CAS write sets the new mtime strictly above
the old one, so a record can never come back to an etag it had (no ABA).  Objects are not
fsync'ed one by one: :meth:`LocalStore.sync` runs one ``syncfs`` before a record refers to
them; records themselves are fsync'ed with their directory.  Safe for many processes.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator

from ..errors import NotFound, PreconditionFailed, UsageError
from ..fsutil import fsync_dir, write_file
from .base import Leftover, ListItem, Store

_libc = ctypes.CDLL(None, use_errno=True)
TMP_DIR = ".tmp"
LOCK_DIR = ".locks"
STALE_TMP_SECONDS = 3600


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


def _item(key: str, st: os.stat_result) -> ListItem:
    return ListItem(key=key, size=st.st_size, etag=_etag(st), mtime=st.st_mtime)


class LocalStore(Store):
    """A store in a local (or NFS) directory."""

    def __init__(self, root: str, create: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.uri = self.root
        if create:
            os.makedirs(self.root, exist_ok=True)
        elif not os.path.isdir(self.root):
            raise NotFound(f"store directory does not exist: {self.root}")
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._locks = os.path.join(self.root, LOCK_DIR)
        try:
            os.makedirs(self._tmp, exist_ok=True)
            os.makedirs(self._locks, exist_ok=True)
        except PermissionError:
            pass  # a read-only store: reads still work
        self._made_dirs: set[str] = set()
        self._clean_stale_tmp()

    # --- helpers ---------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or "\0" in key or any(
                p in ("", ".", "..") for p in key.split("/")) or key.startswith("."):
            raise UsageError(f"invalid store key {key!r}")
        return os.path.join(self.root, key)

    def _clean_stale_tmp(self) -> None:
        try:
            now = time.time()
            for e in os.scandir(self._tmp):
                try:
                    if now - e.stat().st_mtime > STALE_TMP_SECONDS:
                        os.unlink(e.path)
                except OSError:
                    pass
        except OSError:
            pass

    def _mkdirs(self, d: str) -> None:
        if d not in self._made_dirs:
            os.makedirs(d, exist_ok=True)
            self._made_dirs.add(d)

    def _write_tmp(self, data: bytes, fsync: bool) -> str:
        tmp = os.path.join(self._tmp, f"{os.getpid()}-{os.urandom(8).hex()}")
        write_file(tmp, data, fsync)
        return tmp

    # --- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key in store: {key}") from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            with open(self._path(key), "rb") as f:
                return f.read(), _etag(os.fstat(f.fileno()))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key in store: {key}") from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key in store: {key}") from None
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def head(self, key: str) -> ListItem | None:
        try:
            return _item(key, os.stat(self._path(key)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def list(self, prefix: str) -> Iterator[ListItem]:
        base, _, start = prefix.rpartition("/")
        top = os.path.join(self.root, base) if base else self.root
        out: list[ListItem] = []
        try:
            names = os.listdir(top)
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        for name in names:
            if not name.startswith(start) or (not base and name.startswith(".")):
                continue
            key = f"{base}/{name}" if base else name
            path = os.path.join(top, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if os.path.isdir(path):
                for dirpath, _dirs, files in os.walk(path):
                    rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                    for f in files:
                        try:
                            out.append(_item(f"{rel}/{f}", os.stat(os.path.join(dirpath, f))))
                        except FileNotFoundError:
                            pass
            else:
                out.append(_item(key, st))
        out.sort(key=lambda i: i.key)
        return iter(out)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        top = os.path.join(self.root, prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            return sorted(e.name for e in os.scandir(top)
                          if e.is_dir() and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    # --- writes ----------------------------------------------------------------------------
    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if os.path.exists(path):
            return False
        durable = not key.startswith("objects/")
        tmp = self._write_tmp(data, fsync=durable)
        if not durable:
            # content-addressed: a racing writer can only put the same bytes, so a rename
            # over it is harmless, and one syscall cheaper than link + unlink
            try:
                self._mkdirs(os.path.dirname(path))
                os.rename(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return True
        try:
            self._mkdirs(os.path.dirname(path))
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        if durable:
            fsync_dir(os.path.dirname(path))
        return True

    def _lock(self, key: str) -> int:
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        fd = os.open(os.path.join(self._locks, name), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key)
        if etag is None:
            if not self.put_if_absent(key, data):
                raise PreconditionFailed(f"record already exists: {key}")
            return _etag(os.stat(path))
        fd = self._lock(key)
        try:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise PreconditionFailed(f"record was removed: {key}") from None
            if _etag(st) != etag:
                raise PreconditionFailed(f"record changed: {key}")
            tmp = self._write_tmp(data, fsync=False)
            mtime = max(time.time_ns(), st.st_mtime_ns + 1)
            os.utime(tmp, ns=(mtime, mtime))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.rename(tmp, path)
            fsync_dir(os.path.dirname(path))
            return _etag(os.stat(path))
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        fd = self._lock(key)
        try:
            tmp = self._write_tmp(data, fsync=True)
            st = None
            try:
                st = os.stat(path)
            except FileNotFoundError:
                pass
            if st is not None:
                mtime = max(time.time_ns(), st.st_mtime_ns + 1)
                os.utime(tmp, ns=(mtime, mtime))
            self._mkdirs(os.path.dirname(path))
            os.rename(tmp, path)
            fsync_dir(os.path.dirname(path))
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def touch(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            os.utime(path)
            return
        except FileNotFoundError:
            self.put_if_absent(key, data)
            return
        except PermissionError:  # another user's file: a fresh copy of the same bytes
            pass
        tmp = self._write_tmp(data, fsync=False)
        try:
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def leftovers(self, before: float) -> builtins.list[Leftover]:
        out = []
        try:
            entries = list(os.scandir(self._tmp))
        except OSError:
            return []
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_mtime < before:
                out.append(Leftover(f"{TMP_DIR}/{e.name}", st.st_size, st.st_mtime, e.name))
        return out

    def remove_leftover(self, item: Leftover) -> None:
        if "/" in item.token or item.token in ("", ".", ".."):
            raise UsageError(f"invalid temp file name {item.token!r}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._tmp, item.token))

    def sync(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                if err != errno.ENOSYS:
                    raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
