"""Who may do what under ``drafts/`` (SPEC §9), asked on every call: the layer between open
draft files (``drafts/files.py``) and the draft operations (``drafts/ops.py``).

* :meth:`DraftRights._rights`: the caller may (still) write the project.  The rules are the
  daemon's :class:`~artifactfs.mount.access.Access` (the config as it is now, group membership
  cached at most 10 s), so a user who left a project's writers loses his drafts of it at his
  next call; they stay for root, who may do everything.
* :meth:`DraftRights._readable`: ``drafts/P/`` answers a non-reader of P like ``MOUNT/P/``
  (EACCES), whatever exists there.

What is subtle: ``read`` and ``write`` of FUSE carry no caller, so a handle remembers who
opened it, and every read and write through a draft's own staging file asks again for him.  A
handle still reading a draft file's unchanged base bytes is served by the namespace like a
version file and, like an open file of a version, keeps reading.
"""

from __future__ import annotations

from ..errors import PermissionDenied
from ..mount.draftport import Host, MayWrite
from .files import DraftFiles


class DraftRights(DraftFiles):
    def __init__(self, ns: Host, may_write: MayWrite | None) -> None:
        super().__init__(ns)
        self.may_write = may_write
        self.openers: dict[int, int] = {}  # open draft file handle -> the opener's uid

    def _rights(self, project: str, uid: int, what: str = "write") -> None:
        """EACCES unless ``uid`` may write ``project`` now (root always may)."""
        if uid and self.may_write is not None and not self.may_write(uid, project):
            if what == "write":
                raise PermissionDenied(f"you may not write project {project} (any more)")
            raise PermissionDenied(f"you may not {what} project {project}")

    def _readable(self, project: str, uid: int) -> None:
        self.ns._check_read(project, uid)

    def _recheck(self, fh: int) -> None:
        uid = self.openers.get(fh)
        h = self.handles.get(fh)
        if uid and h is not None:
            self._rights(h.draft.meta.project, uid)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self._recheck(fh)
        return await super().read(fh, off, size)

    def write_now(self, fh: int, off: int, buf: bytes) -> int | None:
        self._recheck(fh)
        return super().write_now(fh, off, buf)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._recheck(fh)
        return await super().write(fh, off, buf)

    async def release(self, fh: int) -> None:
        self.openers.pop(fh, None)
        await super().release(fh)
