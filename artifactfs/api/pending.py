"""Assembling an artifact before it is logged: ``add_file``, ``add_dir``, ``new_file``,
``add``, ``add_reference`` and ``remove`` (the base class of ``Artifact``).

Files are read when the artifact is logged, not when they are added (one read: hash and
upload together).  wandb's default ``policy="mutable"`` promises the content as it was when
added: a file whose stat changed since is refused at logging with a clear error, never
logged silently with other bytes (``policy="immutable"`` skips that check).  Adding another
file at a path already added needs ``overwrite=True`` (``merge=True`` for ``add_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from .. import data_types, ingest, model
from ..catalog import VersionRecord
from ..errors import NotFound, UsageError
from ..names import check_name, check_path, check_project
from ..repo import Repo
from ..store.base import Store

if TYPE_CHECKING:
    from .entry import ArtifactEntry

POLICIES = ("mutable", "immutable")


def _stat_of(src: ingest.Source) -> tuple[int, int, int, int]:
    return (src.ino, src.size, src.mtime_ns, src.ctime_ns)


class Pending:
    """What is added to an artifact before it is logged."""

    def __init__(self, name: str, type: str) -> None:
        base_name, sep, _ = name.partition(":") if isinstance(name, str) else ("", "", "")
        if sep:
            raise UsageError(f"invalid artifact name {name!r}: no ':VERSION' in a new artifact")
        if "/" in base_name:
            project, _, base_name = base_name.rpartition("/")
            project = project.rpartition("/")[2]  # entity/project/name: the entity is not used
            check_project(project)
            self._project: str | None = project
        else:
            self._project = None
        self._name = check_name(base_name, "artifact name")
        self.type = check_name(type, "artifact type")
        self._repo: Repo | None = None
        self._base: VersionRecord | None = None
        self._sources: dict[str, ingest.Source] = {}
        self._immutable: set[str] = set()
        self._entries: dict[str, model.Entry | None] = {}
        self._tmpdir: str | None = None

    def _pending(self) -> None:
        if getattr(self, "_record", None) is not None:
            raise UsageError(f"artifact {self._name} is logged and immutable: use new_draft() "
                             "to make changes")

    def _clear_pending(self) -> None:
        self._sources, self._entries, self._base, self._immutable = {}, {}, None, set()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # --- adding ----------------------------------------------------------------------------
    def add_file(self, local_path: str, name: str | None = None, is_tmp: bool = False,
                 skip_cache: bool = False, policy: str = "mutable",
                 overwrite: bool = False) -> ArtifactEntry:
        """Add one local file at ``name`` (default: its basename).  ``is_tmp``: the name's
        stem becomes the first 20 hex digits of the content digest, as in wandb (no clash
        between temp files of one name).  ``skip_cache``: nothing is cached when adding."""
        self._pending()
        if not os.path.isfile(local_path):
            raise UsageError(f"no such file: {local_path}")
        if policy not in POLICIES:
            raise UsageError(f"invalid policy {policy!r}: use 'mutable' or 'immutable'")
        if is_tmp:
            from ..verify import file_digest
            head, _, tail = (name or os.path.basename(local_path)).rpartition("/")
            parts = tail.split(".")
            parts[0] = str(file_digest(local_path)["digest"])[:20]
            name = (head + "/" if head else "") + ".".join(parts)
        src = next(iter(ingest.scan(local_path, name, follow_symlinks=True)))
        self._add_source(src, overwrite, "overwrite=True", policy)
        return self._entry_for(src.path)

    def add_dir(self, local_path: str, name: str | None = None, skip_cache: bool = False,
                policy: str = "mutable", merge: bool = False) -> None:
        """Add a local directory tree under ``name`` (default: at the root)."""
        self._pending()
        if not os.path.isdir(local_path):
            raise UsageError(f"no such directory: {local_path}")
        if policy not in POLICIES:
            raise UsageError(f"invalid policy {policy!r}: use 'mutable' or 'immutable'")
        for src in ingest.scan(local_path, name):
            self._add_source(src, merge, "merge=True", policy)

    def _add_source(self, src: ingest.Source, replace: bool, how: str, policy: str) -> None:
        old = self._sources.get(src.path)
        if old is not None and not replace and (old.local, _stat_of(old)) != (
                src.local, _stat_of(src)):
            raise UsageError(f"{src.path!r} was already added from {old.local}: pass {how} "
                             "to replace it")
        self._entries.pop(src.path, None)
        self._sources[src.path] = src
        (self._immutable.add if policy == "immutable" else self._immutable.discard)(src.path)

    @contextmanager
    def new_file(self, name: str, mode: str = "x",
                 encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a new file into the artifact: ``with art.new_file("a.txt") as f: …``."""
        self._pending()
        path = check_path(name)
        if path in self._sources or self._entries.get(path) is not None:
            raise UsageError(f"file {name!r} was already added to this artifact")
        local = self._tmp_path(path)
        if "b" not in mode and encoding is None:
            encoding = "utf-8"
        with open(local, mode.replace("x", "w"), encoding=encoding) as f:
            yield f
        self.add_file(local, path)

    def _tmp_path(self, path: str) -> str:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="artifactfs-new-")
        local = os.path.join(self._tmpdir, path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return local

    def add(self, obj: Any, name: str, overwrite: bool = False) -> ArtifactEntry:
        """Add a Table, PartitionedTable or JSON-serialisable object (as W&B's JSON files)."""
        self._pending()
        path, doc = data_types.encode(obj, check_path(name))
        if not overwrite and (path in self._sources or self._entries.get(path) is not None):
            raise UsageError(f"{path!r} was already added: pass overwrite=True to replace it")
        local = self._tmp_path(path)
        with open(local, "w", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True)
        return self.add_file(local, path, overwrite=True)

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[ArtifactEntry]:
        """Track data that stays at ``uri`` (file://, s3://, gs://, http(s)://)."""
        from .. import refs
        from .entry import ArtifactEntry
        self._pending()
        added = refs.expand(uri, name, checksum=checksum, max_objects=max_objects or 10000)
        for path, e in added:
            self._sources.pop(path, None)
            self._entries[path] = e
        return [ArtifactEntry(self, p, e) for p, e in added]  # type: ignore[arg-type]

    def remove(self, item: str | ArtifactEntry) -> None:
        """Remove a path (file or directory) from a pending artifact or a draft."""
        self._pending()
        raw = item if isinstance(item, str) else item.path
        path = check_path(raw.strip("/"))
        hit = False
        for store in (self._sources, self._entries):
            for p in [p for p in store if p == path or p.startswith(path + "/")]:
                del store[p]
                hit = True
        if self._base is not None and self._repo is not None:
            e = self._repo.entry(self._base, path)
            if e is not None:
                self._entries[path] = None
                hit = True
        if not hit:
            raise NotFound(f"no path {raw!r} in artifact {self._name}")

    # --- what was added --------------------------------------------------------------------
    def _entry_for(self, path: str) -> ArtifactEntry:
        from .entry import ArtifactEntry
        src = self._sources.get(path)
        if src is not None:
            return ArtifactEntry(self, path, None, src.local)  # type: ignore[arg-type]
        return ArtifactEntry(self, path, self._entries.get(path))  # type: ignore[arg-type]

    def _pending_entry(self, path: str) -> ArtifactEntry | None:
        if path in self._sources or self._entries.get(path) is not None:
            return self._entry_for(path)
        return None

    def _pending_entries(self) -> dict[str, ArtifactEntry]:
        paths = [p for p, s in self._sources.items() if s.kind == "file"]
        paths += [p for p, e in self._entries.items() if e is not None and e.kind != "dir"]
        return {p: self._entry_for(p) for p in sorted(paths)}

    def _check_unchanged(self) -> None:
        for path, src in self._sources.items():
            if src.kind != "file" or path in self._immutable:
                continue
            try:
                st = os.stat(src.local)
            except FileNotFoundError:
                raise UsageError(f"{src.local} (added as {path!r}) is gone") from None
            if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != _stat_of(src):
                raise UsageError(f"{src.local} (added as {path!r}) changed after it was added: "
                                 "add it again, or add it with policy='immutable'")

    def _changes(self, repo: Repo, project: str, store: Store) -> dict[str, model.Entry | None]:
        """Ingest what was added (into ``store``, a write session's, gcsync.py); the changes
        to apply to the base (or to nothing)."""
        self._pending()
        if self._project is not None and self._project != project:
            raise UsageError(f"artifact belongs to project {self._project}, not {project}")
        repo.check_type(project, self._name, self.type)
        self._check_unchanged()
        changes: dict[str, model.Entry | None] = dict(self._entries)
        changes.update(ingest.store_files(store, list(self._sources.values())))
        return changes

    def __del__(self) -> None:
        if getattr(self, "_tmpdir", None):
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # type: ignore[arg-type]
