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

Permissions: the store's root directory decides them.  Every directory made inside gets the
root's mode (its setgid bit too), every file the root's mode without execute bits, and both the
root's group; a root process (a root daemon or CLI) writing into a store owned by someone else
also gives them the root's owner.  So a group-shared store (owner A, group G, ``2770``) stays
usable by every member of G whoever writes (files ``0660``), a private one (``0750``) stays
unreadable by others (files ``0640``), and the writer's umask matters only when the root itself
is made: with ``private`` (the config restricts who may read projects, SPEC §9) it is made
``0750``, else as the umask says.  Those are the only guard of a directory store: the mount's
ACL does not apply to ``get`` or ``cat`` (:meth:`LocalStore.exposure` tells when the store is
readable by users the ACL excludes).  An EACCES names the directory that refused, its owner
and mode, never a temp file.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import fcntl
import grp
import hashlib
import os
import pwd
import stat
import time
from collections.abc import Iterator, Mapping

from ..errors import NotFound, PermissionDenied, PreconditionFailed, UsageError
from ..fsutil import fsync_dir, write_all
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

    def __init__(self, root: str, create: bool = True, private: bool = False) -> None:
        """``private``: a root made now is ``0750`` (see the module docstring)."""
        self.root = os.path.abspath(root)
        self.uri = self.root
        if not os.path.isdir(self.root):
            if not create:
                raise NotFound(f"store directory does not exist: {self.root}")
            os.makedirs(os.path.dirname(self.root), exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o750 if private else 0o777)
        st = os.stat(self.root)
        self._dir_mode = stat.S_IMODE(st.st_mode) & 0o2777
        self._file_mode = stat.S_IMODE(st.st_mode) & 0o666
        self._owner = (st.st_uid if os.geteuid() == 0 else -1, st.st_gid)
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._locks = os.path.join(self.root, LOCK_DIR)
        self._made_dirs: set[str] = set()
        try:
            self._mkdirs(self._tmp)
            self._mkdirs(self._locks)
        except PermissionDenied:
            pass  # a read-only store: reads still work
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

    def _adopt(self, fd: int, directory: bool) -> None:
        """Give what we just made the store's owner, group and mode (module docstring)."""
        st = os.fstat(fd)
        uid = self._owner[0] if self._owner[0] not in (-1, st.st_uid) else -1
        gid = self._owner[1] if self._owner[1] != st.st_gid else -1
        if uid != -1 or gid != -1:
            with contextlib.suppress(PermissionError):  # not in the store's group: kept as is
                os.fchown(fd, uid, gid)
        mode = self._dir_mode if directory else self._file_mode
        if stat.S_IMODE(st.st_mode) != mode or uid != -1 or gid != -1:
            os.fchmod(fd, mode)  # after fchown, which may clear the setgid bit

    def _denied(self, e: PermissionError, doing: str) -> PermissionDenied:
        """EACCES in our terms: the directory that refused (never a temp file in it), with
        its owner and mode, so the operator knows what to change."""
        path = str(e.filename2 or e.filename or self.root)
        if doing == "read":  # the root refusing the walk, else the file itself
            where = self.root if not os.access(self.root, os.R_OK | os.X_OK) else path
        else:  # a create, link or rename: the directory it happens in
            where = os.path.dirname(path) if path != self.root else path
        try:
            st = os.stat(where)
            who = f" (owner {_name(pwd.getpwuid, st.st_uid)}, group " \
                  f"{_name(grp.getgrgid, st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o})"
        except OSError:
            who = ""
        return PermissionDenied(f"no permission to {doing} the store {self.root}: {where}"
                                f"{who} refuses uid {os.geteuid()}")

    @contextlib.contextmanager
    def _access(self, doing: str) -> Iterator[None]:
        try:
            yield
        except PermissionError as e:
            raise self._denied(e, doing) from None

    def _mkdirs(self, d: str) -> None:
        """``d`` and its missing parents below the root, each adopted as it is made."""
        if d in self._made_dirs:
            return
        missing = []
        p = d
        while p != self.root and not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        with self._access("write to"):
            for p in reversed(missing):
                try:
                    os.mkdir(p, self._dir_mode & 0o777)
                except FileExistsError:
                    continue
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    self._adopt(fd, directory=True)
                finally:
                    os.close(fd)
        self._made_dirs.add(d)

    def _write_tmp(self, data: bytes, fsync: bool) -> str:
        tmp = os.path.join(self._tmp, f"{os.getpid()}-{os.urandom(8).hex()}")
        with self._access("write to"):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         self._file_mode)
        try:
            self._adopt(fd, directory=False)
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    # --- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        try:
            with self._access("read"), open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key in store: {key}") from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            with self._access("read"), open(self._path(key), "rb") as f:
                return f.read(), _etag(os.fstat(f.fileno()))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key in store: {key}") from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with self._access("read"):
                fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such key in store: {key}") from None
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def head(self, key: str) -> ListItem | None:
        try:
            with self._access("read"):
                return _item(key, os.stat(self._path(key)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def list(self, prefix: str) -> Iterator[ListItem]:
        with self._access("read"):
            return iter(self._list(prefix))

    def _list(self, prefix: str) -> builtins.list[ListItem]:
        base, _, start = prefix.rpartition("/")
        top = os.path.join(self.root, base) if base else self.root
        out: list[ListItem] = []
        try:
            names = os.listdir(top)
        except (FileNotFoundError, NotADirectoryError):
            return []

        def fail(e: OSError) -> None:  # an unreadable directory is an error, not "empty"
            if not isinstance(e, FileNotFoundError):
                raise e

        for name in names:
            if not name.startswith(start) or (not base and name.startswith(".")):
                continue
            key = f"{base}/{name}" if base else name
            path = os.path.join(top, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                for dirpath, _dirs, files in os.walk(path, onerror=fail):
                    rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                    for f in files:
                        try:
                            out.append(_item(f"{rel}/{f}", os.stat(os.path.join(dirpath, f))))
                        except FileNotFoundError:
                            pass
            else:
                out.append(_item(key, st))
        out.sort(key=lambda i: i.key)
        return out

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        top = os.path.join(self.root, prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            with self._access("read"):
                return sorted(e.name for e in os.scandir(top)
                              if e.is_dir() and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    # --- writes ----------------------------------------------------------------------------
    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._access("write to"):
            return self._put_if_absent(key, data)

    def _put_if_absent(self, key: str, data: bytes) -> bool:
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
        """flock of a per-key lock file (read-only: flock needs no write access, so a lock file
        any writer made serves every other)."""
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        path = os.path.join(self._locks, name)
        with self._access("write to"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, self._file_mode)
                self._adopt(fd, directory=False)
            except FileExistsError:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        with self._access("write to"):
            return self._cas(key, data, etag)

    def _cas(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key)
        if etag is None:
            if not self._put_if_absent(key, data):
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
        with self._access("write to"):
            self._put(key, data)

    def _put(self, key: str, data: bytes) -> None:
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
        with self._access("delete from"), contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def exposure(self, readers: Mapping[str, frozenset[str]]) -> str | None:
        """Why users the config's ACL excludes can read this store's files, else ``None``.

        ``readers``: each restricted project and the groups that may read it.  Every user may
        when the root lets others in (o+r or o+x); the store's group may when it can enter
        and has members (besides the owner) while it is not among a project's readers."""
        if not readers:
            return None
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o005:
            return (f"the store {self.root} (mode {mode:04o}) can be read by every user of this "
                    f"node, but the config restricts who may read {', '.join(sorted(readers))}; "
                    f"the mount's ACL does not guard the store: chmod o-rwx {self.root}")
        group = _name(grp.getgrgid, st.st_gid)
        shut_out = sorted(p for p, groups in readers.items() if group not in groups)
        if mode & 0o050 and shut_out and _has_members(st.st_gid, st.st_uid):
            return (f"the store {self.root} can be read by group {group}, which the config does "
                    f"not let read {', '.join(shut_out)}; the mount's ACL does not guard the "
                    f"store")
        return None

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


def _name(lookup: object, n: int) -> str:
    try:
        return str(lookup(n)[0])  # type: ignore[operator]
    except KeyError:
        return str(n)


def _has_members(gid: int, owner: int) -> bool:
    """Whether anyone but ``owner`` is in group ``gid`` (listed, or as his primary group)."""
    try:
        listed = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        listed = set()
    try:
        listed.discard(pwd.getpwuid(owner).pw_name)
    except KeyError:
        pass
    return bool(listed) or any(pw.pw_gid == gid and pw.pw_uid != owner for pw in pwd.getpwall())
