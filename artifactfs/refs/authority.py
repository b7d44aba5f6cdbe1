"""Who resolves a reference (SPEC §7): the gate a mount puts in front of every reference it
serves, so that a reader never gets more through the mount than he could read himself.

Two modes, chosen by the mount:

* **own** (no ``--allow-other``: the kernel lets only the daemon's own user in): the daemon's
  rights *are* the reader's — his files, his credentials, his network — and no allowlist
  applies.  ``get`` and the Python API run in the user's own process and are in this mode by
  nature (a root ``get`` is root's business).
* **shared** (``--allow-other``: a daemon serving other users; normally root):

  - ``file://``: opened *as the reader* (identity.py: his uid and the groups the user
    database gives him, in the worker thread doing the open), walked without blindly following
    links (localfs.py); or, when the path is written below one of the operator's
    ``file_roots``, opened with the daemon's own rights but never leaving that root.  A
    daemon that can not take on other identities (not root) serves other users' ``file://``
    references only inside ``file_roots``.
  - ``s3://`` / ``gs://``: only in the operator's ``buckets`` (read with the daemon's
    credentials, so for every caller, root included: the list is the operator's statement of
    what all mount users may read).
  - ``http(s)://``: never to loopback, link-local or private addresses unless the operator
    names them (netpolicy.py), also for every caller: cached bytes must have come from an
    address every reader may reach.

  A refusal is :class:`PermissionDenied` (EACCES) and one warning line naming the uid, the
  user name and the URI, with control characters escaped (``safetext.escape``).

What is subtle:

* The check runs on **every open** by every user, never once per reference: the blob cache
  holds bytes fetched for one user, and the kernel's page cache too.  ``file://`` bytes are
  never put in the blob cache at all: an open file reads through the descriptor opened with
  its reader's authority (``file.Source``), so bytes one user could read are never handed to
  another.  Remote bytes are cached; every open checks the (caller-independent) lists first,
  and the cache remembers under which policy its reference bytes were fetched (:meth:`tag`):
  a daemon started with another policy or mode drops them.
* The daemon replaces its gate when ``[references]`` changes in the config; every later open
  is checked against the new rules.  Cached remote bytes stay until the next start drops those
  fetched under other rules (:meth:`tag`): a host name later removed from ``private_hosts``
  that meanwhile resolves to a public address could still be served the bytes fetched from
  its private one — the operator's own earlier allowance, not an attacker's.
* The caller travels in a context variable (:data:`READER`) set by mount/ops.py for the calls
  that may read references (open, setattr), so a copy-up deep in the draft code, run in a
  worker thread (trio copies the context), reads with the caller's authority; in shared mode
  an unknown caller is refused, never served with the daemon's rights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
from collections.abc import Iterator
from contextvars import ContextVar

from ..config import References
from ..errors import PermissionDenied
from ..model import Entry, RefInfo
from ..safetext import escape
from . import file, identity, localfs, scheme_of
from .identity import Reader
from .netpolicy import NetPolicy

__all__ = ["READER", "Gate", "Reader", "current", "reading_for"]

log = logging.getLogger("artifactfs.refs")
READER: ContextVar[Reader | None] = ContextVar("artifactfs_reader", default=None)


@contextlib.contextmanager
def reading_for(reader: Reader) -> Iterator[None]:
    """References read in this block (and in worker threads it starts) are read for
    ``reader``."""
    token = READER.set(reader)
    try:
        yield
    finally:
        READER.reset(token)


def current() -> Reader | None:
    return READER.get()


class Gate:
    """The rules of one mount (see the module docstring); thread-safe."""

    def __init__(self, references: References | None = None, shared: bool = False) -> None:
        refs = references or References()
        self.shared = shared
        self.roots = refs.file_roots
        self.buckets = frozenset(refs.buckets)
        self.net = NetPolicy(refs.private_hosts) if shared else None
        self.euid = os.geteuid()
        self.references = refs

    def tag(self) -> str:
        """Names the rules remote reference bytes are fetched under (the blob cache keeps
        them only while it stays the same)."""
        if not self.shared:
            return "own"
        doc = {"buckets": sorted(self.buckets), "private_hosts": sorted(self.references.private_hosts)}
        return "shared-" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]

    def open(self, entry: Entry, reader: Reader | None) -> file.Source | None:
        """Worker thread: check that ``reader`` may read the reference ``entry`` now.  A
        ``file://`` reference comes back opened for him (the caller closes the Source);
        others come back ``None`` once allowed (their bytes come through the blob cache).
        :class:`PermissionDenied` (logged) when he may not."""
        info = entry.ref
        if entry.kind != "ref" or info is None:
            raise PermissionDenied("not a reference")
        try:
            if scheme_of(info.uri) == "file":
                return self._open_file(info, entry.size, reader)
            if self.shared:
                self._check_remote(info.uri)
            return None
        except PermissionDenied as e:
            uid = reader.uid if reader is not None else -1
            log.warning("refused a reference to uid %d (%s): %s", uid, _user(uid),
                        escape(str(e)))
            raise

    def _open_file(self, info: RefInfo, size: int, reader: Reader | None) -> file.Source:
        path = file.path_of(info.uri)
        if not self.shared:
            return file.open_own(info, size)
        if reader is None:
            raise PermissionDenied(f"reference {info.uri}: no caller known to read it for")
        for root in self.roots:
            if localfs.below(path, root) is not None:
                try:
                    fd = file.open_path(info.uri, path, lambda st: True, root)
                    return file.Source(info, size, fd)
                except PermissionDenied:
                    break  # leads out of the root: only the reader's own rights may serve it
        trust = file.trust_for(info, reader.uid)
        if reader.uid == self.euid:
            return file.Source(info, size, file.open_path(info.uri, path, trust))
        with identity.acting_as(reader):
            fd = file.open_path(info.uri, path, trust)
        return file.Source(info, size, fd)

    def _check_remote(self, uri: str) -> None:
        scheme, _, rest = uri.partition("://")
        scheme = scheme.lower()
        if scheme in ("s3", "gs"):
            bucket = f"{scheme}://{rest.partition('/')[0]}"
            if bucket not in self.buckets:
                raise PermissionDenied(f"reference {uri}: {bucket} is not one of the buckets "
                                       "[references] names")
            return
        assert self.net is not None
        self.net.check_url(uri)


def _user(uid: int) -> str:
    try:
        return escape(pwd.getpwuid(uid).pw_name)
    except (KeyError, OverflowError):
        return "unknown user"
