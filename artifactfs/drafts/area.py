"""The drafts area: every draft of one mount, on local disk, with no FUSE in it.

A :class:`DraftArea` is a directory (mode 0700) holding ``PROJECT/NAME/ID/``, one directory per
draft (``meta.json``, ``files/``, journal and snapshot; docs/drafts.md has the table).  It
creates, finds, lists and discards drafts and lists the ``PROJECT``/``NAME`` directories above
them.  What a draft *is* (its tree, journal, staging files and :class:`DraftMeta`) is
``drafts/draft.py``'s; this module only decides where drafts live and when they come and go.

Subtle parts:

* One process at a time: an ``flock`` on ``.lock``, taken without waiting (``Busy`` if held).
  Holding it is what makes it safe, on open, to delete ``.trash`` and ``.tmp-*`` leftovers.
* A crash leaves a whole draft or none: creation fills a ``.tmp-<random>`` directory and
  renames it into place (then fsyncs the parent); discarding renames the draft into ``.trash``
  (one ``rename``: what a commit waits for) and a background thread deletes the bytes after
  (:class:`_Reaper`), so a commit replies without waiting for a big ``rmtree``.  Whatever a
  crash or an unmount leaves in ``.trash`` (or as ``.tmp-*``) is found at the next start and
  deleted in the background too.  Open handles keep working.
* Opening the area reads each ``meta.json`` only; a draft replays its journal on first use.
  A draft whose ``meta.json`` is unreadable is logged and skipped, never deleted.
* Names starting with ``.`` are the area's own (no valid project, artifact or draft id does).
  ``PROJECT``/``NAME`` directories may be empty (``mkdir -p``); :meth:`DraftArea.children`
  lists the disk, :meth:`DraftArea.list` the drafts loaded.
* Lock order: the area's lock, then a draft's (:meth:`DraftArea.discard`), never the reverse.
"""
from __future__ import annotations

import builtins
import errno
import fcntl
import logging
import os
import shutil
import threading
from collections import deque

from .. import fetch, model
from ..catalog import VersionRecord, now_iso
from ..errors import AlreadyExists, Busy, IntegrityError, NotFound
from ..fsutil import fsync_dir
from ..names import check_name, check_writable_project
from ..store.base import Store
from .draft import CopyBase, Draft, DraftMeta
from .journal import read_json, write_json_atomic
from .overlay import oserror

log = logging.getLogger(__name__)


def store_copier(store: Store) -> CopyBase:
    """Copy-up from the store itself (verified); the mount passes a blob-cache backed one."""
    def copy(entry: model.Entry, dest: str) -> None:
        fetch.download_file(store, entry, dest)
    return copy


class _Reaper:
    """Deletes discarded drafts' directories in one background thread, oldest first.

    The paths are already out of the area's namespace (in ``.trash``), so nothing waits for
    them: a crash part way leaves the rest in ``.trash`` for the next start."""

    def __init__(self) -> None:
        self._todo: deque[str] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    def add(self, path: str) -> None:
        with self._cond:
            self._todo.append(path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="draft-reaper",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._todo:
                    self._busy = False
                    self._thread = None
                    self._cond.notify_all()
                    return
                path = self._todo.popleft()
                self._busy = True
            shutil.rmtree(path, ignore_errors=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is deleted; False if ``timeout`` s passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._todo and not self._busy, timeout)


def _scan_dirs(path: str) -> builtins.list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


class DraftArea:
    """All drafts of one node, under ``root`` (mode 0700): ``root/PROJECT/NAME/ID/``.

    One process at a time (an flock on ``root/.lock``).  Creation builds the draft in a temp
    directory and renames it into place; discarding renames it into ``.trash`` first, so a
    crash leaves a whole draft or none.  Empty ``PROJECT``/``NAME`` directories may exist
    (``mkdir -p``) and hold only drafts.
    """

    def __init__(self, root: str, load: model.Loader, copy_base: CopyBase) -> None:
        self.root = os.path.abspath(root)
        self._load, self._copy_base = load, copy_base
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._lockfd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise Busy(f"drafts area {self.root} is in use by another process") from None
        self._lock = threading.Lock()
        self._trash = os.path.join(self.root, ".trash")
        self._reaper = _Reaper()
        os.makedirs(self._trash, mode=0o700, exist_ok=True)
        for e in os.scandir(self._trash):  # discards a crash or an unmount interrupted
            self._reaper.add(e.path)
        for e in os.scandir(self.root):
            if e.name.startswith(".tmp-"):  # creations a crash interrupted
                self._reaper.add(e.path)
        self._drafts: dict[tuple[str, str, str], Draft] = {}
        for p in _scan_dirs(self.root):
            for n in _scan_dirs(os.path.join(self.root, p)):
                for i in _scan_dirs(os.path.join(self.root, p, n)):
                    d = os.path.join(self.root, p, n, i)
                    try:
                        meta = DraftMeta.from_json(read_json(os.path.join(d, "meta.json")))
                    except (OSError, ValueError, KeyError, IntegrityError) as e:
                        log.error("ignoring unreadable draft %s: %s", d, e)
                        continue
                    self._drafts[(p, n, i)] = Draft(d, meta, load, copy_base)

    def close(self) -> None:
        with self._lock:
            for d in self._drafts.values():
                d.close()
            os.close(self._lockfd)

    def create(self, project: str, name: str, draft_id: str, owner: int,
               base: VersionRecord | None) -> Draft:
        """A new draft of ``project/name`` based on ``base`` (None: empty)."""
        check_writable_project(project)
        check_name(name, "artifact name")
        check_name(draft_id, "draft id")
        meta = DraftMeta(project, name, draft_id, owner, now_iso(), base)
        with self._lock:
            if (project, name, draft_id) in self._drafts:
                raise AlreadyExists(f"draft {meta.label} already exists")
            tmp = os.path.join(self.root, f".tmp-{os.urandom(8).hex()}")
            os.mkdir(tmp, 0o700)
            os.mkdir(os.path.join(tmp, "files"), 0o700)
            write_json_atomic(os.path.join(tmp, "meta.json"), meta.to_json())
            parent = os.path.join(self.root, project, name)
            os.makedirs(parent, mode=0o700, exist_ok=True)
            final = os.path.join(parent, draft_id)
            os.rename(tmp, final)
            fsync_dir(parent)
            d = self._drafts[(project, name, draft_id)] = Draft(
                final, meta, self._load, self._copy_base)
            return d

    def get(self, project: str, name: str, draft_id: str) -> Draft:
        with self._lock:
            d = self._drafts.get((project, name, draft_id))
        if d is None:
            raise NotFound(f"no draft {project}/{name}/{draft_id}")
        return d

    def list(self, owner: int | None = None) -> builtins.list[Draft]:
        """Every draft (of ``owner`` when given), sorted by label."""
        with self._lock:
            ds = sorted(self._drafts.values(), key=lambda d: d.label)
        return [d for d in ds if owner is None or d.meta.owner == owner]

    def children(self, project: str | None = None, name: str | None = None) -> builtins.list[str]:
        """Names in ``drafts/``, ``drafts/PROJECT/`` or ``drafts/PROJECT/NAME/``."""
        path = os.path.join(self.root, *(x for x in (project, name) if x is not None))
        try:
            return _scan_dirs(path)
        except (FileNotFoundError, NotADirectoryError):
            raise oserror(errno.ENOENT, path) from None

    def make_dir(self, project: str, name: str | None = None) -> None:
        """``mkdir drafts/PROJECT`` or ``drafts/PROJECT/NAME`` (a place for drafts only)."""
        check_writable_project(project)
        if name is not None:
            check_name(name, "artifact name")
        path = os.path.join(self.root, project, *(() if name is None else (name,)))
        if os.path.isdir(path):
            raise oserror(errno.EEXIST, path)
        os.makedirs(path, mode=0o700)

    def remove_dir(self, project: str, name: str | None = None) -> None:
        """``rmdir`` of an intermediate directory: ENOTEMPTY while it holds drafts."""
        path = os.path.join(self.root, project, *(() if name is None else (name,)))
        os.rmdir(path)

    def discard(self, draft: Draft) -> None:
        """Remove a draft: gone from the area when this returns; its staging files are
        deleted by a background thread (open handles keep working)."""
        m = draft.meta
        with self._lock:
            if self._drafts.get((m.project, m.name, m.id)) is not draft:
                raise NotFound(f"no draft {draft.label}")
            trash = os.path.join(self._trash, os.urandom(8).hex())
            draft.retire(trash)
            del self._drafts[(m.project, m.name, m.id)]
        self._reaper.add(trash)

    def wait_deleted(self, timeout: float | None = None) -> bool:
        """Wait until discarded drafts' files are deleted (tests; False on timeout)."""
        return self._reaper.wait(timeout)
