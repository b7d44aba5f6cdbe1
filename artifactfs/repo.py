"""Repository operations shared by the CLI and the Python API: put, get, listing, records.

A :class:`Repo` is a store plus its catalog.  Everything here is synchronous and may block on
store I/O; the FUSE daemon calls the catalog from worker threads instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import fetch, gcsync, ingest, lockfile, model, tree
from .catalog import Catalog, VersionRecord
from .errors import ArtifactfsError, NotFound, TypeConflict, UsageError
from .names import Ref, check_name, check_writable_project, parse_ref
from .store import Store, open_store

if TYPE_CHECKING:
    from .dlcache import Reuse
    from .statcache import StatCache


class Repo:
    """A store and its catalog."""

    def __init__(self, store: Store | str | None, notify_mounts: bool = False,
                 lock: str | None = None, private: bool = False) -> None:
        """``lock``: a lock file whose pins every resolve obeys (default: $ARTIFACTFS_LOCK).
        ``private``: a directory store made now is not readable by others."""
        pins = lockfile.Lock.load(lock) if lock else lockfile.from_env()
        self.store = store if isinstance(store, Store) else open_store(store, private)
        self.catalog = Catalog(self.store,
                               on_change=self._notify_mounts if notify_mounts else None)
        self.catalog.pins = pins

    def _notify_mounts(self, project: str, name: str) -> None:
        """Tell this node's mounts of the same store to re-read an artifact now (SPEC §8:
        a delete disappears from the mount at once).  Best effort: a mount that does not
        answer still catches up within its refresh interval."""
        self._tell_mounts({"op": "refresh", "artifact": f"{project}/{name}"})

    def attach_run(self, project: str, run_id: str) -> None:
        """Tell this node's mounts of the store that this process (and its children) reads as
        run ``project/run_id`` (lineage from reads, mount/consumers.py).  Best effort."""
        self._tell_mounts({"op": "run.attach", "run": f"{project}/{run_id}"})

    def _tell_mounts(self, request: dict[str, Any]) -> None:
        """Send ``request`` to every mount of this store on this node; no answer is fine."""
        from .mount import control, registry
        for rec in registry.records():
            if rec.store != self.store.uri:
                continue
            try:
                control.request(rec.control, request, timeout=5)
            except ArtifactfsError:
                continue

    # --- writing ---------------------------------------------------------------------------
    def writing(self, what: str) -> gcsync.WriteSession:
        """A writer's lease against concurrent gc (gcsync.py): store objects through its
        ``store`` and write the record inside it."""
        return gcsync.WriteSession(self.store, what)

    def _session(self, session: gcsync.WriteSession | None, what: str
                 ) -> contextlib.AbstractContextManager[gcsync.WriteSession]:
        return contextlib.nullcontext(session) if session is not None else self.writing(what)

    def commit_entries(
        self, project: str, name: str, type_: str, changes: Mapping[str, model.Entry | None],
        base: VersionRecord | None = None, session: gcsync.WriteSession | None = None, *,
        load: model.Loader | None = None, index: model.Indexer | None = None,
        keep_base: bool = False, on_built: Callable[[model.Node], None] | None = None,
        **kw: Any,
    ) -> tuple[VersionRecord, bool]:
        """The commit engine: build the tree of ``base`` + ``changes`` and allocate a version
        for it (``kw`` are :meth:`Catalog.commit_version`'s options).  Every version is built
        here: ``put``, the API's ``log_artifact`` (of a ``new_draft`` too), the finish of a
        distributed draft and the commit of a draft (drafts/commit.py, with or without a
        daemon).  Objects the changes refer to must have been stored through ``session``.

        Only the nodes on changed paths are built; ``load`` and ``index`` read the others
        (default: the store, through the catalog; the daemon reads its manifest cache).
        ``keep_base``: content equal to a live ``base`` makes no version: the base comes back,
        with ``aliases`` set on it; the nodes built are then stored only once a version will
        refer to them.  ``on_built(root)`` runs once the tree is built, before any record.
        """
        check_writable_project(project)
        check_name(name, "artifact name")
        check_name(type_, "artifact type")
        cat = self.catalog
        with self._session(session, f"commit {project}/{name}") as w:
            nodes = _Deferred(w.save_node, load or cat.load_node, index or cat.load_index,
                              keep_back=keep_base)
            root = ingest.build_tree(nodes.save, nodes.load, base.root if base else None,
                                     changes, nodes.index)
            if keep_base and base is not None and root.digest == base.digest:
                current = cat.get_version(project, name, base.version)[0]
                if current.is_live(cat.project_ttl(project)):
                    if on_built is not None:
                        on_built(root)
                    for a in kw.get("aliases") or ():
                        cat.set_alias(project, name, base.version, a)
                    return current, False
            nodes.flush()
            if on_built is not None:
                on_built(root)
            return cat.commit_version(project, name, type_, root,
                                      base=base.version if base else None, session=w, **kw)

    def put_path(
        self, local: str, project: str, name: str, type_: str, *, path_name: str | None = None,
        follow_symlinks: bool = False, progress: ingest.Progress | None = None,
        hints: StatCache | None = None, **kw: Any,
    ) -> tuple[VersionRecord, bool]:
        """A local file or directory tree → the next version (or the unchanged latest).

        With ``hints``, files whose stat is unchanged since an earlier put and whose digest the
        latest version holds at the same path are not read again (see statcache.py)."""
        check_writable_project(project)
        check_name(name, "artifact name")
        check_name(type_, "artifact type")
        self.check_type(project, name, type_)
        if not os.path.lexists(local):
            raise UsageError(f"no such file or directory: {local}")
        started = time.time_ns()
        sources = ingest.scan(local, path_name, follow_symlinks)
        reused: dict[str, model.Entry] = {}
        files: list[ingest.Source] = []
        with self.writing(f"put {project}/{name}") as w:
            if hints is not None:
                sources = self._unchanged(sources, hints, project, name, reused, files, progress)
            entries = ingest.store_files(w.store, sources, progress)
            entries.update(reused)
            result = self.commit_entries(project, name, type_, entries, session=w, **kw)
        if hints is not None:
            hints.record(((s, entries[s.path].digest) for s in files), started)
        return result

    def _unchanged(self, sources: Iterable[ingest.Source], hints: StatCache, project: str,
                   name: str, reused: dict[str, model.Entry], files: list[ingest.Source],
                   progress: ingest.Progress | None) -> Iterator[ingest.Source]:
        """``sources`` minus the files a hint and the latest version agree on (their entries
        go to ``reused``); every regular file, reused or hashed, is noted in ``files``."""
        base: dict[str, model.Entry] | None = None
        for src in sources:
            if src.kind == "file":
                files.append(src)
                digest = hints.get(src)
                if digest is not None:
                    if base is None:  # the latest version's files, read once on the first hint
                        latest = self.catalog.latest(project, name)
                        base = dict(tree.walk(self.catalog.load_node, latest.root)) \
                            if latest is not None else {}
                    e = base.get(src.path)
                    if e is not None and e.kind == "file" and e.digest == digest \
                            and e.size == src.size:
                        reused[src.path] = model.file_entry(e.size, e.digest, e.chunks,
                                                            src.executable, src.mtime_ns)
                        if progress is not None:
                            progress(src.size)
                        continue
            yield src

    def check_type(self, project: str, name: str, type_: str) -> None:
        """Fail early (before uploading anything) on a type clash."""
        try:
            col = self.catalog.get_collection(project, name)
        except NotFound:
            return
        if col.type != type_:
            from . import discovery
            if discovery.revive(self, project, name, type_):  # a deleted artifact's name
                return
            raise TypeConflict(
                f"artifact {project}/{name} already exists with type {col.type!r}, not {type_!r}")

    # --- reading ---------------------------------------------------------------------------
    def resolve(self, ref: str | Ref) -> VersionRecord:
        return self.catalog.resolve(parse_ref(ref) if isinstance(ref, str) else ref)

    def entries(self, rec: VersionRecord, prefix: str | None = None
                ) -> Iterator[tuple[str, model.Entry]]:
        """Every non-directory entry (and empty directory) of a version, in path order (only
        paths starting with ``prefix``): streamed, bounded by what the record declares."""
        self.catalog.check_root(rec)
        return tree.stream(self.catalog.open_node, rec.root, prefix,
                           want=(rec.size, rec.file_count))

    def entry(self, rec: VersionRecord, path: str) -> model.Entry | None:
        self.catalog.check_root(rec)
        return tree.find(self.catalog.open_node, rec.root, path.strip("/"))

    def download(self, rec: VersionRecord, root: str, path_prefix: str | None = None,
                 progress: ingest.Progress | None = None, reuse: Reuse | None = None,
                 skip_missing_refs: bool = False) -> int:
        """Download a version into ``root``; with ``reuse``, what is on this node already is
        not fetched again and the root is remembered as holding ``rec`` (dlcache.py)."""
        self.catalog.check_root(rec)
        n = fetch.download_tree(self.store, self.catalog.open_node, rec.root, root,
                                path_prefix, progress, reuse=reuse,
                                skip_missing_refs=skip_missing_refs,
                                want=(rec.size, rec.file_count))
        if reuse is not None and reuse.hints is not None:
            reuse.flush()
            reuse.hints.remember_root(os.path.realpath(root), rec.label, rec.root, path_prefix)
        return n

    def version_json(self, rec: VersionRecord, latest: int | None = None,
                     aliases: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The §5 JSON shape of one version (pass ``latest``/``aliases`` to save reads)."""
        if aliases is None:
            aliases = self.catalog.aliases(rec.project, rec.name)
        if latest is None:
            try:
                lt = self.catalog.latest(rec.project, rec.name)
            except ArtifactfsError:  # a damaged record above: latest is unknown
                lt = None
            latest = lt.version if lt else None
        names = sorted(a for a, v in aliases.items() if v == rec.version)
        return {
            "project": rec.project, "name": rec.name, "type": rec.type,
            "version": rec.version, "ref": rec.label, "digest": rec.digest,
            "aliases": (["latest"] if latest == rec.version else []) + names,
            "description": rec.description, "metadata": rec.metadata, "size": rec.size,
            "file_count": rec.file_count, "created_at": rec.created_at,
            "ttl_days": rec.ttl_days, "logged_by": rec.run, "base": rec.base,
        }

    def versions_json(self, project: str, name: str, warnings: list[str] | None = None
                      ) -> list[dict[str, Any]]:
        """The live versions' JSON; a damaged version or alias record is left out and, with
        ``warnings``, named there (``latest`` is left out when a damaged record is above)."""
        self.catalog.get_collection(project, name)  # NotFound for unknown artifacts
        damaged: dict[int, str] = {}
        bad_aliases: dict[str, str] = {}
        recs = self.catalog.versions(project, name, damaged=damaged)
        latest = recs[-1].version if recs else None
        if latest is not None and any(n > latest for n in damaged):
            latest = None
        aliases = self.catalog.aliases(project, name, bad_aliases)
        if warnings is not None:
            warnings.extend(damaged[n] for n in sorted(damaged))
            warnings.extend(bad_aliases[a] for a in sorted(bad_aliases))
            if recs and latest is None:
                warnings.append(f"{project}/{name}: which version is latest is unknown (a "
                                "damaged record is above the highest live version)")
        return [self.version_json(r, latest if latest is not None else -1, aliases)
                for r in recs]

    def ls_docs(self, rec: VersionRecord) -> Iterator[dict[str, Any]]:
        """``{"path", "size", "digest", "digest_kind"}`` (+ ``sha256`` when the plain SHA-256
        is known, ``ref``, ``target``) per entry, streamed; verify.describe says which digest
        is which."""
        from .verify import describe
        for path, e in self.entries(rec):
            d: dict[str, Any] = {"path": path, "size": e.size, **describe(e)}
            if e.kind == "ref" and e.ref is not None:
                d["ref"] = e.ref.uri
            elif e.kind == "symlink":
                d["target"] = e.target
            elif e.kind == "dir":
                d["path"] = path + "/"
            yield d

    def ls_json(self, rec: VersionRecord) -> list[dict[str, Any]]:
        return list(self.ls_docs(rec))


def iter_refs(values: Iterable[str]) -> list[Ref]:
    return [parse_ref(v) for v in values]


class _Deferred:
    """The tree nodes of a commit.  With ``keep_back``, a node is stored only once a version
    will refer to it (:meth:`flush`; an unchanged commit stores none), and a node read back
    while building (the empty directory a new directory starts from) first stores everything
    built so far, children first.  Without, every node is stored as it is built."""

    def __init__(self, save: model.Saver, load: model.Loader, index: model.Indexer, *,
                 keep_back: bool) -> None:
        self._save, self._load, self._index = save, load, index
        self._keep_back = keep_back
        self._built: dict[str, model.Node] = {}

    def save(self, node: model.Node) -> None:
        if self._keep_back:
            self._built.setdefault(node.oid, node)
        else:
            self._save(node)

    def load(self, oid: str) -> Mapping[str, model.Entry]:
        if oid in self._built:
            self.flush()
        return self._load(oid)

    def index(self, oid: str) -> Sequence[model.Part] | None:
        if oid in self._built:
            self.flush()
        return self._index(oid)

    def flush(self) -> None:
        for node in self._built.values():
            self._save(node)
        self._built.clear()
