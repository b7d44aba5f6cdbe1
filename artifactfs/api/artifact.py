"""``Artifact``: wandb's artifact object over versions in the store (SPEC §6).

An Artifact is *pending* (assembled with ``add_file``/``add_dir``/``new_file``/``add``/
``add_reference``/``remove``, possibly as a draft of a logged version) or *logged* (bound to
one version record, whose description, metadata, aliases, tags and ttl are edited and
``save()``d).  Assembling lives in pending.py; this module is identity, logging, reading and
editing.

What is subtle:

* Logging is synchronous, so versions logged in a loop get numbers in logging order, and
  ``wait()`` has nothing to wait for.
* Logging content equal to the latest version makes no new version (SPEC §2); a description,
  metadata or ttl the caller gave is then saved on that version (as ``save()`` would) instead
  of being replaced by the old values.
* ``save()`` of a pending artifact logs it: to the current run, or to a new run of the
  artifact's project (wandb creates one too).
* Downloads reuse what is on this node (dlcache.py) unless ``skip_cache=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import data_types, discovery, fetch, links, verify
from ..catalog import RunRecord, VersionRecord
from ..dlcache import Reuse
from ..errors import NotFound, UsageError
from ..names import check_alias, check_path
from ..repo import Repo
from . import _common
from .entry import ArtifactEntry, Manifest
from .pending import Pending

if TYPE_CHECKING:
    from .public import ArtifactCollection
    from .run import Run


class Artifact(Pending):
    """A named, typed collection of files: pending until logged, then one version."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: Mapping[str, Any] | None = None, incremental: bool = False,
                 use_as: str | None = None) -> None:
        super().__init__(name, type)
        self.description = description or ""
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.aliases: list[str] = []
        self.tags: list[str] = []
        self.ttl: timedelta | None = None
        self.incremental = incremental
        self.use_as = use_as  # accepted for wandb compatibility; not used
        self._record: VersionRecord | None = None
        self._entity: str | None = None

    # --- identity --------------------------------------------------------------------------
    @classmethod
    def _from_record(cls, repo: Repo, rec: VersionRecord, entity: str | None = None) -> Artifact:
        a = cls(rec.name, rec.type, rec.description, rec.metadata)
        a._project, a._entity = rec.project, entity
        a._bind(repo, rec)
        return a

    def _bind(self, repo: Repo, rec: VersionRecord) -> None:
        self._repo, self._record = repo, rec
        self._project = rec.project
        self.type = rec.type
        self.description, self.metadata = rec.description, dict(rec.metadata)
        self.aliases = list(repo.catalog.aliases_of(rec))
        self.tags = list(rec.tags)
        self.ttl = timedelta(days=rec.ttl_days) if rec.ttl_days is not None else None
        self._clear_pending()

    def _logged(self) -> tuple[Repo, VersionRecord]:
        if self._record is None or self._repo is None:
            raise UsageError(f"artifact {self._name!r} has not been logged yet: log it with "
                             "run.log_artifact() or save() first")
        return self._repo, self._record

    def _label(self) -> str:
        return self._record.label if self._record else f"{self._project}/{self._name}"

    @property
    def id(self) -> str | None:
        """``PROJECT/NAME:vN`` once logged (unique in the store)."""
        return self._record.label if self._record else None

    @property
    def entity(self) -> str:
        return self._entity or _common.default_entity()

    @property
    def project(self) -> str | None:
        return self._project

    @property
    def version(self) -> str | None:
        """``"v3"`` once logged, else ``None``."""
        return f"v{self._record.version}" if self._record else None

    @property
    def name(self) -> str:
        """``cats:v3`` once logged, ``cats`` before (as in wandb)."""
        return f"{self._name}:{self.version}" if self._record else self._name

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self._project}/{self.name}"

    @property
    def collection(self) -> ArtifactCollection:
        from .public import ArtifactCollection
        repo, rec = self._logged()
        return ArtifactCollection(repo, rec.project, rec.name, self._entity)

    @property
    def state(self) -> str:
        if self._record is None:
            return "PENDING"
        return "COMMITTED" if self._record.deleted_at is None else "DELETED"

    def is_draft(self) -> bool:
        """True until logged (wandb: a draft is an artifact not saved yet)."""
        return self._record is None

    @property
    def digest(self) -> str | None:
        return self._record.digest if self._record else None

    @property
    def size(self) -> int:
        return self._record.size if self._record else 0

    @property
    def file_count(self) -> int:
        return self._record.file_count if self._record else 0

    @property
    def created_at(self) -> str | None:
        return self._record.created_at if self._record else None

    @property
    def updated_at(self) -> str | None:
        return (self._record.updated_at or self._record.created_at) if self._record else None

    # --- links (registry) ------------------------------------------------------------------
    @property
    def is_link(self) -> bool:
        return self._record is not None and self._record.source is not None

    @property
    def source_artifact(self) -> Artifact:
        """The version a link points at (itself for a plain version)."""
        repo, rec = self._logged()
        src = links.source_of(repo, rec)
        return self if src is None else Artifact._from_record(repo, src, self._entity)

    @property
    def source_name(self) -> str:
        return self.source_artifact.name if self.is_link else self.name

    @property
    def source_project(self) -> str | None:
        return self.source_artifact.project if self.is_link else self._project

    @property
    def source_version(self) -> str | None:
        return self.source_artifact.version if self.is_link else self.version

    @property
    def linked_artifacts(self) -> list[Artifact]:
        """The registry links of this version."""
        repo, rec = self._logged()
        return [Artifact._from_record(repo, r, self._entity) for r in links.links_of(repo, rec)]

    def link(self, target_path: str, aliases: list[str] | None = None) -> Artifact:
        """Link this version into the registry (``COLLECTION`` or ``registry/COLLECTION``);
        returns the linked version.  A pending artifact is logged first."""
        if self._record is None:
            self.save()
        repo, rec = self._logged()
        out = links.link(repo, rec, links.parse_target(target_path), list(aliases or []))
        return Artifact._from_record(repo, out, self._entity)

    def unlink(self) -> None:
        """Remove this link from its registry collection."""
        repo, rec = self._logged()
        links.unlink(repo, rec)
        self._record = repo.catalog.get_version(rec.project, rec.name, rec.version)[0]

    # --- logging ---------------------------------------------------------------------------
    def _commit_options(self, aliases: list[str], run: RunRecord | None) -> dict[str, Any]:
        for al in aliases:
            check_alias(al)
        return {"description": self.description, "metadata": self.metadata, "aliases": aliases,
                "run": f"{run.project}/{run.id}" if run else None,
                "ttl_days": self.ttl.total_seconds() / 86400 if self.ttl is not None else None}

    def _wanted_aliases(self, extra: list[str] | None) -> list[str]:
        return list(dict.fromkeys([a for a in self.aliases + list(extra or []) if a != "latest"]))

    def _log(self, repo: Repo, project: str, aliases: list[str], run: RunRecord | None,
             tags: list[str] | None = None) -> None:
        options = self._commit_options(aliases, run)
        base = self._base
        if base is None and self.incremental:
            base = repo.catalog.latest(project, self._name)
        with repo.writing(f"log {project}/{self._name}") as w:
            changes = self._changes(repo, project, w.store)
            rec, created = repo.commit_entries(project, self._name, self.type, changes,
                                               base=base, session=w, **options)
        if not created:
            rec = self._keep_given(repo, rec)
        wanted_tags = list(dict.fromkeys(self.tags + list(tags or [])))
        if set(wanted_tags) - set(rec.tags):
            rec = discovery.set_version_tags(repo, rec, sorted(set(rec.tags) | set(wanted_tags)))
        self._bind(repo, rec)

    def _keep_given(self, repo: Repo, rec: VersionRecord) -> VersionRecord:
        """Unchanged content: save the description/metadata/ttl the caller gave on the
        existing version instead of dropping them."""
        desc = self.description if self.description and self.description != rec.description \
            else rec.description
        meta = self.metadata if self.metadata and self.metadata != rec.metadata else rec.metadata
        if (desc, meta) != (rec.description, rec.metadata):
            rec = repo.catalog.update_version(rec.project, rec.name, rec.version, lambda r: replace(
                r, description=desc, metadata=dict(meta)))
        ttl = self.ttl.total_seconds() / 86400 if self.ttl is not None else None
        if ttl is not None and ttl != rec.ttl_days:
            rec = repo.catalog.set_ttl(rec.project, rec.name, rec.version, ttl)
        return rec

    def save(self, project: str | None = None, settings: Any = None) -> None:
        """A logged version: store edits of description, metadata, aliases, tags and ttl.
        A pending artifact: log it, to the current run or a new one (as wandb does)."""
        if self._record is None:
            run = _common.current_run()
            if run is None or (project and project != run.project):
                from .run import init_run
                run = init_run(project or self._project, job_type="auto")
            run.log_artifact(self)
            return
        self._save_edits()

    def _save_edits(self) -> None:
        repo, rec = self._logged()
        cat = repo.catalog
        ttl = self.ttl.total_seconds() / 86400 if self.ttl is not None else None
        if ttl != rec.ttl_days:
            cat.set_ttl(rec.project, rec.name, rec.version, ttl)
        new = cat.update_version(rec.project, rec.name, rec.version, lambda r: replace(
            r, description=self.description, metadata=dict(self.metadata)))
        if sorted(set(self.tags)) != sorted(new.tags):
            new = discovery.set_version_tags(repo, new, self.tags)
        wanted = self._wanted_aliases(None)
        for a in wanted:
            check_alias(a)
        current = [a for a in cat.aliases_of(new) if a != "latest"]
        for a in wanted:
            if a not in current:
                cat.set_alias(rec.project, rec.name, rec.version, a)
        for a in current:
            if a not in wanted:
                cat.remove_alias(rec.project, rec.name, a)
        self._bind(repo, cat.get_version(rec.project, rec.name, rec.version)[0])

    def wait(self, timeout: int | None = None) -> Artifact:
        """Logging is synchronous: the version exists once ``log_artifact`` returned."""
        self._logged()
        return self

    def new_draft(self) -> Artifact:
        """A pending artifact based on this version: log it to make the next version."""
        repo, rec = self._logged()
        if rec.source is not None:
            raise UsageError(f"{rec.label} is a registry link: draft its source "
                             f"({rec.source}) instead")
        a = Artifact(rec.name, rec.type, rec.description, rec.metadata)
        a._project, a._repo, a._base, a._entity = rec.project, repo, rec, self._entity
        a.tags = list(rec.tags)
        return a

    # --- reading a logged version ----------------------------------------------------------
    def get_entry(self, name: str) -> ArtifactEntry:
        """The entry at path ``name``."""
        path = check_path(name.strip("/"))
        if self._record is None:
            hit = self._pending_entry(path)
            if hit is None:
                raise NotFound(f"no path {name!r} in artifact {self._name}")
            return hit
        repo, rec = self._logged()
        e = repo.entry(rec, path)
        if e is None or (e.kind == "dir" and (e.count or repo.catalog.load_node(e.oid))):
            raise NotFound(f"no file {name!r} in {rec.label}")
        return ArtifactEntry(self, path, e)

    get_path = get_entry

    def get(self, name: str) -> Any:
        """The object stored by ``add(obj, name)`` (a Table, PartitionedTable or JSON)."""
        repo, rec = self._logged()
        for path in (name, name + data_types.Table.suffix,
                     name + data_types.PartitionedTable.suffix, name + ".json"):
            try:
                e = repo.entry(rec, check_path(path))
            except UsageError:
                continue
            if e is not None and e.kind == "file":
                data = fetch.read_range(repo.store, e, 0, e.size)
                try:
                    return data_types.decode(path, json.loads(data))
                except ValueError:
                    raise UsageError(f"{path!r} in {rec.label} is not JSON") from None
        raise NotFound(f"no object {name!r} in {rec.label}")

    def entries(self) -> Iterator[ArtifactEntry]:
        repo, rec = self._logged()
        for path, e in repo.entries(rec):
            yield ArtifactEntry(self, path, e)

    def files(self, names: list[str] | None = None, per_page: int = 50) -> list[ArtifactEntry]:
        """The entries (all, or those at ``names``)."""
        if names is not None:
            return [self.get_entry(n) for n in names]
        return list(self.entries())

    @property
    def manifest(self) -> Manifest:
        if self._record is None:
            return Manifest(self._pending_entries(), None)
        return Manifest({e.path: e for e in self.entries()}, self._record.digest)

    def _root(self, root: str | None) -> str:
        _, rec = self._logged()
        if root:
            return root
        base = os.environ.get("ARTIFACTFS_ARTIFACT_DIR") or os.environ.get(
            "WANDB_ARTIFACT_DIR") or "artifacts"
        return os.path.join(base, f"{rec.name}:v{rec.version}")

    def download(self, root: str | None = None, allow_missing_references: bool = False,
                 skip_cache: bool | None = None, path_prefix: str | None = None,
                 multipart: bool | None = None) -> str:
        """Download (all, or the files under ``path_prefix``); returns the root directory.
        What is on this node already is not fetched again unless ``skip_cache``."""
        repo, rec = self._logged()
        root = self._root(root)
        with Reuse.open(_common.cache_dir(), bool(skip_cache)) as reuse:
            repo.download(rec, root, path_prefix, reuse=reuse,
                          skip_missing_refs=allow_missing_references)
        return os.path.abspath(root)

    def _download_entry(self, path: str, root: str | None, skip_cache: bool) -> str:
        repo, _ = self._logged()
        e = self.get_entry(path)._entry
        assert e is not None
        root = os.path.realpath(self._root(root))
        os.makedirs(root, exist_ok=True)
        parent, _, base = path.rpartition("/")
        dest = os.path.join(fetch._safe_dir(root, parent), base)
        with Reuse.open(_common.cache_dir(), skip_cache) as reuse:
            fetch.download_file(repo.store, e, dest, reuse=reuse)
        return dest

    def file(self, root: str | None = None) -> str:
        """Download the artifact's only file; returns its path."""
        repo, rec = self._logged()
        paths = [p for p, e in repo.entries(rec) if e.kind != "dir"]
        if len(paths) != 1:
            raise UsageError(f"{rec.label} holds {len(paths)} files: file() needs exactly one "
                             "(use download())")
        return self._download_entry(paths[0], root, False)

    def checkout(self, root: str | None = None) -> str:
        """Make ``root`` hold exactly this version: download, then delete what is not in it."""
        root = self.download(root)
        report = self.verify_report(root)
        for p in sorted(report.extra, reverse=True):
            full = os.path.join(root, p)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        for dirpath, dirs, files in os.walk(root, topdown=False):
            rel = os.path.relpath(dirpath, root)
            if rel != "." and not dirs and not files and not self._has_dir(rel):
                os.rmdir(dirpath)
        return root

    def _has_dir(self, rel: str) -> bool:
        repo, rec = self._logged()
        return repo.entry(rec, rel.replace(os.sep, "/")) is not None

    def verify_report(self, root: str | None = None, fast: bool = False) -> verify.Report:
        repo, rec = self._logged()
        hints = Reuse.open(_common.cache_dir()).hints if fast else None
        try:
            return verify.verify_tree(repo.catalog.load_node, rec.root, self._root(root),
                                      hints=hints)
        finally:
            if hints is not None:
                hints.close()

    def verify(self, root: str | None = None) -> None:
        """Raise :class:`verify.VerificationError` (a ValueError) unless ``root`` holds
        exactly this version's files; every file is read and hashed."""
        root = self._root(root)
        report = self.verify_report(root)
        if not report.ok:
            raise verify.VerificationError(root, report)

    # --- lifecycle -------------------------------------------------------------------------
    def delete(self, delete_aliases: bool = False) -> None:
        repo, rec = self._logged()
        held = [a for a, v in repo.catalog.aliases(rec.project, rec.name).items()
                if v == rec.version]
        if held and not delete_aliases:
            raise UsageError(f"{rec.label} holds aliases {', '.join(sorted(held))}: pass "
                             "delete_aliases=True to delete them too")
        repo.catalog.delete_version(rec.project, rec.name, rec.version, delete_aliases)
        self._record = repo.catalog.get_version(rec.project, rec.name, rec.version)[0]

    def logged_by(self) -> Run | None:
        from .run import Run
        repo, rec = self._logged()
        r = repo.catalog.logged_by(rec)
        return Run(repo, r, self._entity) if r else None

    def used_by(self) -> list[Run]:
        from .run import Run
        repo, rec = self._logged()
        return [Run(repo, r, self._entity) for r in repo.catalog.used_by(rec)]

    def __repr__(self) -> str:
        where = self._label() if self._project else self._name
        return f"<Artifact {where} ({self.type})>"
