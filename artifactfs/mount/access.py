"""SPEC §9 access control, from the config's ``[projects.P]`` tables: who may read a project's
versions (``readers``) and who may make drafts and commit to it (``writers``), by unix group.

* A project with no ``readers`` is readable by everyone; ``writers`` may always read too (they
  draft on its versions).  A project with no ``writers`` lets its readers write (everyone when
  it has no readers either).  Root may do everything.
* Rights are asked for on every call (SPEC §9): reads of a restricted project, every call
  under ``drafts/``, every control request.  The rules follow the config file (the daemon
  re-reads it when it changes, see ``config.Watch``; a broken edit keeps the rules of before
  and is logged as an error), and membership follows the user database within GROUPS_TTL.
* Membership comes from the user database (``getgrouplist`` of the uid's name), as a daemon
  serving many users must see it, not from the calling process's groups.  It is cached per
  uid for :data:`GROUPS_TTL` seconds, so a path walk storm does not query NSS per lookup.

What is subtle: the mount does not use ``default_permissions``, so the kernel checks nothing
itself.  The namespace asks :meth:`Access.may_read` on every lookup into, listing of and
``access`` on a restricted project, and gives the artifact directories of a restricted project
a zero entry timeout: every path walk below them passes through that lookup again, so a
dentry cached for one user never lets another user in.
"""

from __future__ import annotations

import grp
import os
import pwd
import threading
import time
from collections.abc import Callable, Mapping

from ..config import ProjectAccess

# seconds group membership (and the config file) is trusted before it is read again; at most 10
GROUPS_TTL = min(10.0, float(os.environ.get("ARTIFACTFS_RIGHTS_TTL", "10")))
MayAccess = Callable[[int, str], bool]  # (uid, project) -> allowed


def user_groups(uid: int) -> frozenset[str]:
    """Names of the groups ``uid`` belongs to in the user database (empty when unknown)."""
    try:
        pw = pwd.getpwuid(uid)
        gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except (KeyError, OSError):
        return frozenset()
    out = set()
    for g in gids:
        try:
            out.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return frozenset(out)


class Access:
    """The §9 policy of one daemon (thread-safe: commits ask from worker threads)."""

    def __init__(self, projects: Mapping[str, ProjectAccess],
                 groups: Callable[[int], frozenset[str]] = user_groups,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.projects = dict(projects)
        self._groups, self._clock = groups, clock
        self._cache: dict[int, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def replace(self, projects: Mapping[str, ProjectAccess]) -> None:
        """New rules (the config changed): they apply to the next check."""
        self.projects = dict(projects)

    def groups(self, uid: int) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(uid)
        if hit is not None and now - hit[0] < GROUPS_TTL:
            return hit[1]
        got = self._groups(uid)
        with self._lock:
            self._cache[uid] = (now, got)
        return got

    def restricted(self, project: str) -> bool:
        """Whether some users may not read ``project``."""
        acl = self.projects.get(project)
        return acl is not None and bool(acl.readers)

    def may_read(self, uid: int, project: str) -> bool:
        acl = self.projects.get(project)
        if uid == 0 or acl is None or not acl.readers:
            return True
        return bool(self.groups(uid) & {*acl.readers, *acl.writers})

    def may_write(self, uid: int, project: str) -> bool:
        acl = self.projects.get(project)
        if uid == 0 or acl is None:
            return True
        allowed = acl.writers or acl.readers
        return not allowed or bool(self.groups(uid) & set(allowed))
