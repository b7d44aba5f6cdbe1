"""The store interface: one team's repository of immutable objects and small catalog records.

Two kinds of keys live in a store (see docs/DESIGN.md for the layout):

* content-addressed objects (``objects/sha256/..``): written with :meth:`Store.put_object`
  (a :meth:`Store.put_if_absent`, after a look with :meth:`Store.reuse` when the caller
  expects the object to exist; at most one chunk, 8 MiB, or one tree node each), never
  changed, verified by readers;
* catalog records (JSON): created with put-if-absent and updated with compare-and-swap on an
  opaque ``etag``, which is what makes concurrent writers on many nodes safe with no
  coordinator.

The interface is synchronous and thread-safe: callers on the trio thread must go through
``trio.to_thread``.  Every implementation passes the conformance suite in tests/store/.
Durability: writes may be buffered until :meth:`Store.sync`, which the commit path calls
before it writes a record that refers to the objects ("objects before records").
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Leftover:
    """What a crashed writer left behind outside the keys (a temp file, an unfinished upload)."""

    name: str  # shown to the operator
    size: int
    mtime: float  # store time it was last written
    token: str  # for :meth:`Store.remove_leftover`


@dataclass(frozen=True, slots=True)
class ListItem:
    key: str
    size: int
    etag: str
    mtime: float  # seconds since the epoch (last modification)


class Store(abc.ABC):
    """A key/value store of bytes with put-if-absent and compare-and-swap."""

    uri: str

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole value; raises :class:`NotFound`."""

    @abc.abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The value and its etag, for a later :meth:`cas`; raises :class:`NotFound`."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end); raises :class:`NotFound`."""

    @abc.abstractmethod
    def head(self, key: str) -> ListItem | None:
        """Size/etag/mtime of a key, or ``None`` when it does not exist."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key``; ``False`` (and no change) when it already exists."""

    @abc.abstractmethod
    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        """Write ``data`` if the current etag is ``etag`` (``None``: only if absent).

        Returns the new etag; raises :class:`PreconditionFailed` when the record changed (or,
        for ``etag=None``, exists).
        """

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Unconditional write (only for keys a single writer owns, e.g. draft parts)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key; absent keys are fine."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ListItem]:
        """Every key starting with ``prefix``, in lexicographic order."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """The immediate "sub-directory" names under ``prefix`` (which ends with '/')."""

    def touch(self, key: str, data: bytes) -> None:
        """Bring content-addressed object ``key`` (whose bytes are ``data``) to an mtime of now,
        in place where the store can, else by writing it again; re-create it if it vanished.
        gc (see gcsync.py) never takes an object touched after it started."""
        self.put(key, data)

    def leftovers(self, before: float) -> builtins.list[Leftover]:
        """Temp files or unfinished uploads last written before ``before`` (store time)."""
        return []

    def remove_leftover(self, item: Leftover) -> None:  # noqa: B027 - optional hook
        """Remove one of :meth:`leftovers` (absent is fine)."""

    def sync(self) -> None:  # noqa: B027 - optional hook
        """Make every write so far durable (a no-op where writes are durable at once)."""

    def local_path(self, key: str) -> str | None:
        """A local file holding ``key``'s bytes that may be read in place, if any."""
        return None

    def exposure(self, readers: Mapping[str, frozenset[str]]) -> str | None:
        """Why users outside ``readers`` (restricted project → groups that may read it) can
        read this store's content directly, bypassing the mount's ACL; ``None`` when they can
        not or the store can not tell (S3: the bucket policy decides, out of our sight)."""
        return None

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def reuse(self, key: str) -> bool:
        """True when the content-addressed object ``key`` exists, so that a new record may
        refer to it instead of writing it again (see :meth:`put_object`; a write session of
        gcsync.py notes such reuses like those put-if-absent finds)."""
        return self.exists(key)

    def put_object(self, key: str, data: bytes, likely_present: bool = False) -> bool:
        """Store a content-addressed object; True when this call wrote it.

        ``likely_present``: the caller expects the object to exist (its content was there
        before), so the store looks first (:meth:`reuse`: a HEAD on S3) and sends no bytes
        when it is there.  Otherwise, and when the look finds nothing, it is a
        :meth:`put_if_absent`, whose condition settles a race with another writer."""
        if likely_present and self.reuse(key):
            return False
        return self.put_if_absent(key, data)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and pools."""
