"""Helpers for handler tests: a Namespace + Operations over a real directory store, no mount.

* ``source`` — a session-wide local tree (small files, an executable, a symlink, an empty dir,
  a 300-entry directory, a 20 MB file of three chunks);
* ``repo`` — a fresh directory store per test (``Repo``);
* ``make_fs`` — builds the mount's objects the way the daemon does, over a :class:`Probe`
  store wrapper that counts object reads and can pretend to be remote (no ``local_path``), be
  down or hang, with a fake clock and a recorder of kernel invalidations;
* :class:`Kernel` — plays the kernel's part in lookup counting: it remembers every entry the
  handlers handed out (lookups, accepted readdirplus entries) and can forget them all.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyfuse3

from artifactfs.drafts.area import DraftArea
from artifactfs.errors import StoreUnavailable
from artifactfs.mount.blobcache import BlobCache
from artifactfs.mount.cache import ManifestCache
from artifactfs.mount.namespace import Namespace
from artifactfs.mount.ops import Operations
from artifactfs.repo import Repo
from artifactfs.store.base import ListItem, Store

BIG = 20_000_000


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class Probe(Store):
    """A store wrapper: counts reads, can hide local paths, fail or hang."""

    def __init__(self, inner: Store, remote: bool = False) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.remote = remote
        self.down = False
        self.hang = threading.Event()
        self.gets: Counter[str] = Counter()
        self.lists = 0

    def _check(self) -> None:
        if self.hang.is_set():
            time.sleep(5)
        if self.down:
            raise StoreUnavailable("store is down (test)")

    def get(self, key: str) -> bytes:
        self._check()
        self.gets[key] += 1
        return self.inner.get(key)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self._check()
        self.gets[key] += 1
        return self.inner.get_with_etag(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._check()
        return self.inner.get_range(key, start, length)

    def head(self, key: str) -> ListItem | None:
        self._check()
        return self.inner.head(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_if_absent(key, data)

    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        return self.inner.cas(key, data, etag)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ListItem]:
        self._check()
        self.lists += 1
        return self.inner.list(prefix)

    def list_dirs(self, prefix: str) -> list[str]:
        self._check()
        self.lists += 1
        return self.inner.list_dirs(prefix)

    def local_path(self, key: str) -> str | None:
        return None if self.remote else self.inner.local_path(key)

    def object_gets(self) -> int:
        return sum(n for k, n in self.gets.items() if k.startswith("objects/"))


@dataclass
class FS:
    ns: Namespace
    ops: Operations
    store: Probe
    clock: Clock
    manifest: ManifestCache
    blobs: BlobCache
    invalidated: list[tuple[int, bytes]] = field(default_factory=list)
    area: DraftArea | None = None

    def close(self) -> None:
        if self.area is not None:
            self.area.close()
        self.blobs.close()
        self.manifest.close()


CTX = pyfuse3.RequestContext()


class Token:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out: list[tuple[bytes, Any, int]] = []


class Kernel:
    """The kernel's side of lookup counting, over Operations."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.counts: Counter[int] = Counter()

    async def lookup(self, parent: int, name: str | bytes) -> Any:
        attr = await self.ops.lookup(parent, name.encode() if isinstance(name, str) else name,
                                     CTX)
        if attr.st_ino:
            self.counts[attr.st_ino] += 1
        return attr

    async def walk(self, path: str) -> Any:
        ino, attr = pyfuse3.ROOT_INODE, None
        for part in [p for p in path.split("/") if p]:
            attr = await self.lookup(ino, part)
            ino = attr.st_ino
        return attr

    async def readdir(self, ino: int, batch: int = 1000, start: int = 0
                      ) -> list[tuple[bytes, Any, int]]:
        fh = await self.ops.opendir(ino, CTX)
        out: list[tuple[bytes, Any, int]] = []
        try:
            while True:
                tok = Token(batch)
                await self.ops.readdir(fh, start, tok)  # type: ignore[arg-type]
                for name, attr, cookie in tok.out:
                    self.counts[attr.st_ino] += 1
                    out.append((name, attr, cookie))
                if len(tok.out) < batch:
                    return out
                start = tok.out[-1][2]
        finally:
            await self.ops.releasedir(fh)

    async def forget_all(self) -> None:
        await self.ops.forget(list(self.counts.items()))
        self.counts.clear()

    async def read_file(self, ino: int, chunk: int = 128 * 1024) -> bytes:
        fi = await self.ops.open(ino, os.O_RDONLY, CTX)
        try:
            parts, off = [], 0
            while True:
                data = await self.ops.read(fi.fh, off, chunk)
                if not data:
                    return b"".join(parts)
                parts.append(bytes(data))  # a view of a reused buffer, as pyfuse3 sees it
                off += len(data)
        finally:
            await self.ops.release(fi.fh)


def put(repo: Repo, path: str, name: str = "vision/cats", **kw: Any) -> int:
    project, _, art = name.partition("/")
    rec, _ = repo.put_path(path, project, art, "dataset", **kw)
    return rec.version


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def object_path(repo: Repo, digest: str) -> str:
    path = repo.store.local_path(f"objects/sha256/{digest[:2]}/{digest[2:]}")
    assert path is not None
    return path
