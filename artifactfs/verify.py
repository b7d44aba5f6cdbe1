"""Which digest is which, and checking a local copy against a version (``verify ROOT [REF]``,
``Artifact.verify``, ``artifactfs digest FILE``).

Digests recorded for entries, named by :func:`describe` (``ls --json``, the mount's xattrs):

* ``sha256`` — a file of up to 8 MiB: SHA-256 of its bytes, what ``sha256sum`` prints.
* ``sha256-chunks`` — a larger file: SHA-256 of ``b"artifactfs.chunks.v1\\n"`` followed by the
  32-byte SHA-256 of each 8 MiB chunk (``model.chunked_digest``); ``sha256sum`` prints
  something else, so :func:`file_digest` (``artifactfs digest FILE``) computes both.
* references: the source's own checksum when one was recorded (``sha256`` for ``file://``
  with a checksum, ``etag`` for S3/GCS/HTTP), else ``ref`` (a digest of what was recorded);
* symlinks: ``sha256-target`` (of the target text); empty directories: ``tree``.

What is subtle: verifying reads and hashes every file (the point of it); ``fast=True`` trusts
files whose stat matches a digest record of statcache.py (what a re-``get`` trusts).  A
reference without a recorded checksum can only be checked by size, and says so.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import fetch, model
from .errors import IntegrityError
from .statcache import StatCache

READ = 1 << 20


def describe(e: model.Entry) -> dict[str, Any]:
    """``digest`` and ``digest_kind`` of an entry, plus ``sha256`` when the plain SHA-256 of
    its bytes is known (``sha256sum`` of a copy must print it)."""
    if e.kind == "file":
        if e.chunks:
            return {"digest": e.digest, "digest_kind": "sha256-chunks"}
        return {"digest": e.digest, "digest_kind": "sha256", "sha256": e.digest}
    if e.kind == "ref" and e.ref is not None:
        if e.ref.sha256:
            return {"digest": e.ref.sha256, "digest_kind": "sha256", "sha256": e.ref.sha256}
        if e.ref.etag:
            return {"digest": e.ref.etag, "digest_kind": "etag"}
        return {"digest": e.digest, "digest_kind": "ref"}
    if e.kind == "symlink":
        return {"digest": model.sha256_hex(e.target.encode("utf-8", "surrogateescape")),
                "digest_kind": "sha256-target"}
    return {"digest": e.digest, "digest_kind": "tree"}


def _hash_file(path: str, plain: bool) -> tuple[str, str | None, int]:
    """(artifactfs digest, plain SHA-256 if asked, size) of a local file, read once."""
    whole = hashlib.sha256() if plain else None
    chunks: list[str] = []
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            h = hashlib.sha256()
            got = 0
            while got < model.CHUNK_SIZE:
                data = os.read(fd, min(READ, model.CHUNK_SIZE - got))
                if not data:
                    break
                h.update(data)
                if whole is not None:
                    whole.update(data)
                got += len(data)
            if got or not chunks:
                chunks.append(h.hexdigest())
            size += got
            if got < model.CHUNK_SIZE:
                break
    finally:
        os.close(fd)
    digest = model.chunked_digest(chunks) if size > model.CHUNK_SIZE else chunks[0]
    return digest, whole.hexdigest() if whole is not None else None, size


def file_digest(path: str) -> dict[str, Any]:
    """What ``ls --json`` would record for a local file: digest, kind, plain sha256, size."""
    digest, plain, size = _hash_file(path, plain=True)
    kind = "sha256-chunks" if size > model.CHUNK_SIZE else "sha256"
    return {"path": path, "size": size, "digest": digest, "digest_kind": kind, "sha256": plain}


@dataclass
class Report:
    """The outcome of a verify: empty lists mean the copy matches."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)  # references checked by size only

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "missing": self.missing,
                "changed": self.changed, "extra": self.extra,
                "size_only": self.unverifiable}

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (("missing", self.missing),
                                               ("changed", self.changed),
                                               ("extra", self.extra)) if v]
        return ", ".join(parts) or "ok"


class VerificationError(IntegrityError, ValueError):
    """A local copy does not match its version (a ValueError, as wandb's ``verify`` raises)."""

    def __init__(self, root: str, report: Report) -> None:
        shown = (report.missing + report.changed + report.extra)[:5]
        super().__init__(f"{root} does not match: {report.summary()} ({', '.join(shown)}…)")
        self.report = report


def _matches(path: str, e: model.Entry, hints: StatCache | None) -> bool | None:
    """Whether the local ``path`` holds entry ``e`` (None: it can only be checked by size)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if e.kind == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == e.target
    if e.kind == "dir":
        return stat.S_ISDIR(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
        return False
    if hints is not None and hints.known(path, st) == e.digest:
        return True
    if e.kind == "ref":
        if e.ref is None or not e.ref.sha256:
            return None
        return _hash_file(path, plain=True)[1] == e.ref.sha256
    return _hash_file(path, plain=False)[0] == e.digest


def verify_tree(load: model.Loader, root_oid: str, local_root: str,
                path_prefix: str | None = None, hints: StatCache | None = None,
                extra: bool = True) -> Report:
    """Check ``local_root`` against the version tree ``root_oid`` (or its part under
    ``path_prefix``); ``hints``: trust files whose stat matches a digest record."""
    base = os.path.realpath(local_root)
    report = Report()
    expected: set[str] = set()
    for path, e in fetch.select(load, root_oid, path_prefix):
        if e.kind == "dir":
            expected.add(path)
            if e.count or load(e.oid):
                continue
        expected.add(path)
        report.checked += 1
        ok = _matches(os.path.join(base, path), e, hints)
        if ok is None:
            report.unverifiable.append(path)
        elif not ok:
            (report.changed if os.path.lexists(os.path.join(base, path))
             else report.missing).append(path)
    if extra:
        report.extra = [p for p in _local_paths(base)
                        if p not in expected and (not path_prefix or p.startswith(path_prefix))]
    return report


def _local_paths(base: str) -> Iterator[str]:
    """Relative paths of files, symlinks and empty directories below ``base`` (symlinked
    directories are not followed)."""
    for dirpath, dirs, files in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for d in list(dirs):
            if os.path.islink(os.path.join(dirpath, d)):
                dirs.remove(d)
                files.append(d)
        if not dirs and not files and prefix:
            yield prefix.rstrip("/")
        for f in files:
            yield prefix + f
