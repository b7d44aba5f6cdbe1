"""The Python API, shaped like wandb's (SPEC §6): ``init``, ``Run``, ``Artifact``, ``Api``.

An :class:`Artifact` is either *pending* (being assembled with ``add_file``/``add_dir``/
``new_file``/``add_reference``/``remove``, possibly as a draft of a logged version) or
*logged* (bound to one version record, whose description/metadata/aliases/ttl can be edited
and ``save()``d).  Logging is synchronous, so versions logged in a loop get numbers in
logging order.  A draft keeps its base's tree and only ingests what was added, so logging it
costs the changed bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import IO, Any

from . import config as config_mod
from . import distributed, ingest, model
from .catalog import RunRecord, VersionRecord
from .errors import NotFound, UsageError
from .names import check_alias, check_name, check_path, check_project, parse_ref
from .repo import Repo
from .store.base import Store


def _repo(store: str | None) -> Repo:
    cfg = config_mod.load()
    return Repo(store or cfg.store, notify_mounts=True, private=cfg.restricts_reads)


class ArtifactEntry:
    """One path of a logged artifact (``Artifact.get_path``)."""

    def __init__(self, artifact: Artifact, path: str, entry: model.Entry) -> None:
        self._artifact = artifact
        self.path = path
        self._entry = entry

    @property
    def digest(self) -> str:
        return self._entry.digest

    @property
    def size(self) -> int:
        return self._entry.size

    @property
    def ref(self) -> str | None:
        """The reference URI, for entries that track external data."""
        return self._entry.ref.uri if self._entry.ref is not None else None

    def download(self, root: str | None = None) -> str:
        """Download this one file; returns its local path."""
        root = self._artifact.download(root=root, path_prefix=self.path)
        return os.path.join(root, self.path)

    def __repr__(self) -> str:
        return f"ArtifactEntry({self.path!r}, size={self.size})"


class Artifact:
    """A named, typed collection of files: pending until logged, then one version."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        base_name, sep, _ = name.partition(":")
        if sep:
            raise UsageError(f"invalid artifact name {name!r}: no ':REF' in a new artifact")
        if "/" in base_name:
            project, _, base_name = base_name.partition("/")
            check_project(project)
            self._project: str | None = project
        else:
            self._project = None
        self._name = check_name(base_name, "artifact name")
        self.type = check_name(type, "artifact type")
        self.description = description or ""
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.aliases: list[str] = []
        self.ttl: timedelta | None = None
        self._record: VersionRecord | None = None
        self._repo: Repo | None = None
        self._base: VersionRecord | None = None
        self._sources: dict[str, ingest.Source] = {}
        self._entries: dict[str, model.Entry | None] = {}
        self._tmpdir: str | None = None
        self._saved_aliases: list[str] = []

    # --- identity --------------------------------------------------------------------------
    @classmethod
    def _from_record(cls, repo: Repo, rec: VersionRecord) -> Artifact:
        a = cls(rec.name, rec.type, rec.description, rec.metadata)
        a._project = rec.project
        a._bind(repo, rec)
        return a

    def _bind(self, repo: Repo, rec: VersionRecord) -> None:
        self._repo, self._record = repo, rec
        self.description, self.metadata = rec.description, dict(rec.metadata)
        self.aliases = list(repo.catalog.aliases_of(rec))
        self._saved_aliases = list(self.aliases)
        self.ttl = timedelta(days=rec.ttl_days) if rec.ttl_days is not None else None
        self._sources, self._entries, self._base = {}, {}, None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

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
    def source_name(self) -> str:
        return self._name

    @property
    def qualified_name(self) -> str:
        return f"{self._project}/{self.name}"

    @property
    def state(self) -> str:
        return "COMMITTED" if self._record else "PENDING"

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

    def _logged(self) -> tuple[Repo, VersionRecord]:
        if self._record is None or self._repo is None:
            raise UsageError(f"artifact {self._name!r} has not been logged yet")
        return self._repo, self._record

    def _pending(self) -> None:
        if self._record is not None:
            raise UsageError(f"artifact {self.qualified_name} is logged and immutable: "
                             "use new_draft() to make changes")

    # --- assembling ------------------------------------------------------------------------
    def add_file(self, local_path: str, name: str | None = None, is_tmp: bool = False) -> None:
        """Add one local file, at ``name`` (default: its basename)."""
        self._pending()
        if not os.path.isfile(local_path):
            raise UsageError(f"no such file: {local_path}")
        for src in ingest.scan(local_path, name, follow_symlinks=True):
            self._add_source(src)

    def add_dir(self, local_path: str, name: str | None = None) -> None:
        """Add a local directory tree, under ``name`` (default: at the root)."""
        self._pending()
        if not os.path.isdir(local_path):
            raise UsageError(f"no such directory: {local_path}")
        for src in ingest.scan(local_path, name):
            self._add_source(src)

    def _add_source(self, src: ingest.Source) -> None:
        self._entries.pop(src.path, None)
        self._sources[src.path] = src

    @contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a new file into the artifact: ``with art.new_file("a.txt") as f: …``."""
        self._pending()
        path = check_path(name)
        if path in self._sources or path in [p for p, e in self._entries.items() if e]:
            raise UsageError(f"file {name!r} was already added to this artifact")
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="artifactfs-new-")
        local = os.path.join(self._tmpdir, path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        if "b" not in mode and encoding is None:
            encoding = "utf-8"
        with open(local, mode.replace("x", "w"), encoding=encoding) as f:
            yield f
        self.add_file(local, path)

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> list[ArtifactEntry]:
        """Track data that stays at ``uri`` (file://, s3://, gs://, http(s)://)."""
        self._pending()
        from . import refs
        added = refs.expand(uri, name, checksum=checksum, max_objects=max_objects or 10000)
        for path, e in added:
            self._sources.pop(path, None)
            self._entries[path] = e
        return [ArtifactEntry(self, p, e) for p, e in added]

    def remove(self, item: str) -> None:
        """Remove a path (file or directory) from a pending artifact or a draft."""
        self._pending()
        path = check_path(item.strip("/"))
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
            raise NotFound(f"no path {item!r} in artifact {self._name}")

    def new_draft(self) -> Artifact:
        """A pending artifact based on this version: log it to make the next version."""
        repo, rec = self._logged()
        a = Artifact(rec.name, rec.type, rec.description, rec.metadata)
        a._project, a._repo, a._base = rec.project, repo, rec
        return a

    def _changes(self, repo: Repo, project: str, store: Store) -> dict[str, model.Entry | None]:
        """Ingest what was added (into ``store``, a write session's); the changes to apply to
        the base (or to nothing)."""
        self._pending()
        if self._project is not None and self._project != project:
            raise UsageError(f"artifact belongs to project {self._project}, not {project}")
        repo.check_type(project, self._name, self.type)
        changes: dict[str, model.Entry | None] = dict(self._entries)
        changes.update(ingest.store_files(store, list(self._sources.values())))
        return changes

    def _commit_options(self, aliases: list[str], run: RunRecord | None) -> dict[str, Any]:
        for al in aliases:
            check_alias(al)
        return {"description": self.description, "metadata": self.metadata, "aliases": aliases,
                "run": f"{run.project}/{run.id}" if run else None,
                "ttl_days": self.ttl.total_seconds() / 86400 if self.ttl is not None else None}

    def _log(self, repo: Repo, project: str, aliases: list[str], run: RunRecord | None) -> None:
        options = self._commit_options(aliases, run)
        with repo.writing(f"log {project}/{self._name}") as w:
            changes = self._changes(repo, project, w.store)
            rec, _ = repo.commit_entries(project, self._name, self.type, changes,
                                         base=self._base, session=w, **options)
        self._project = project
        self._bind(repo, rec)

    # --- reading a logged version ------------------------------------------------------------
    def get_path(self, name: str) -> ArtifactEntry:
        repo, rec = self._logged()
        e = repo.entry(rec, check_path(name.strip("/")))
        if e is None or e.kind == "dir":
            raise NotFound(f"no file {name!r} in {rec.label}")
        return ArtifactEntry(self, name.strip("/"), e)

    def entries(self) -> Iterator[ArtifactEntry]:
        repo, rec = self._logged()
        for path, e in repo.entries(rec):
            yield ArtifactEntry(self, path, e)

    def download(self, root: str | None = None, path_prefix: str | None = None) -> str:
        """Download (all, or the files under ``path_prefix``); returns the root directory."""
        repo, rec = self._logged()
        root = root or os.path.join("artifacts", f"{rec.name}:v{rec.version}")
        repo.download(rec, root, path_prefix)
        return os.path.abspath(root)

    # --- mutable fields ----------------------------------------------------------------------
    def save(self) -> None:
        """Store description, metadata, aliases and ttl edits of a logged version."""
        repo, rec = self._logged()
        cat = repo.catalog
        ttl = self.ttl.total_seconds() / 86400 if self.ttl is not None else None
        if ttl != rec.ttl_days:
            cat.set_ttl(rec.project, rec.name, rec.version, ttl)
        new = cat.update_version(rec.project, rec.name, rec.version, lambda r: replace(
            r, description=self.description, metadata=dict(self.metadata)))
        wanted = [a for a in dict.fromkeys(self.aliases) if a != "latest"]
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

    def delete(self, delete_aliases: bool = False) -> None:
        repo, rec = self._logged()
        repo.catalog.delete_version(rec.project, rec.name, rec.version, delete_aliases)

    def logged_by(self) -> Run | None:
        repo, rec = self._logged()
        r = repo.catalog.logged_by(rec)
        return Run(repo, r) if r else None

    def used_by(self) -> list[Run]:
        repo, rec = self._logged()
        return [Run(repo, r) for r in repo.catalog.used_by(rec)]

    def __repr__(self) -> str:
        return f"<Artifact {self.qualified_name if self._project else self._name} ({self.type})>"

    def __del__(self) -> None:
        if getattr(self, "_tmpdir", None):
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # type: ignore[arg-type]


class Run:
    """A job that used and logged artifact versions."""

    def __init__(self, repo: Repo, record: RunRecord) -> None:
        self._repo = repo
        self.record = record

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def project(self) -> str:
        return self.record.project

    @property
    def job_type(self) -> str:
        return self.record.job_type

    @property
    def group(self) -> str:
        return self.record.group

    def log_artifact(self, artifact: Artifact | str, name: str | None = None,
                     type: str | None = None, aliases: list[str] | None = None) -> Artifact:
        """Log a pending artifact (or a local path, with ``name`` and ``type``)."""
        if isinstance(artifact, str):
            if not name or not type:
                raise UsageError("log_artifact(path) needs name= and type=")
            path = artifact
            artifact = Artifact(name, type)
            if os.path.isdir(path):
                artifact.add_dir(path)
            else:
                artifact.add_file(path)
        extra = [a for a in artifact.aliases if a != "latest"]
        artifact._log(self._repo, self.project, list(dict.fromkeys(extra + list(aliases or []))),
                      self.record)
        return artifact

    def upsert_artifact(self, artifact: Artifact, distributed_id: str) -> Artifact:
        """Add this run's files to the shared draft ``distributed_id`` (any node, any time
        before it is finished)."""
        with self._repo.writing(f"upsert {self.project}/{artifact.source_name}") as w:
            changes = artifact._changes(self._repo, self.project, w.store)
            distributed.upsert(self._repo, self.project, artifact.source_name, distributed_id,
                               changes, writer=self.id, session=w)
        artifact._entries, artifact._sources = {}, {}
        return artifact

    def finish_artifact(self, artifact: Artifact, distributed_id: str,
                        aliases: list[str] | None = None) -> Artifact:
        """Commit every upserted file plus this run's own as the next version."""
        options = artifact._commit_options(
            list(dict.fromkeys([a for a in artifact.aliases if a != "latest"] + (aliases or []))),
            self.record)
        with self._repo.writing(f"finish {self.project}/{artifact.source_name}") as w:
            changes = artifact._changes(self._repo, self.project, w.store)
            rec, _ = distributed.finish(self._repo, self.project, artifact.source_name,
                                        distributed_id, artifact.type, changes, writer=self.id,
                                        session=w, **options)
        artifact._project = self.project
        artifact._bind(self._repo, rec)
        return artifact

    def use_artifact(self, ref: str | Artifact, type: str | None = None) -> Artifact:
        """Resolve ``name[:REF]`` or ``project/name[:REF]`` and record it as this run's input."""
        if isinstance(ref, Artifact):
            _, rec = ref._logged()
        else:
            rec = self._repo.catalog.resolve(parse_ref(ref, default_project=self.project))
        if type is not None and rec.type != type:
            raise UsageError(f"{rec.label} has type {rec.type!r}, not {type!r}")
        self._repo.catalog.mark_input(self.record, rec)
        return Artifact._from_record(self._repo, rec)

    def logged_artifacts(self) -> list[Artifact]:
        return self._artifacts("outputs")

    def used_artifacts(self) -> list[Artifact]:
        return self._artifacts("inputs")

    def _artifacts(self, kind: str) -> list[Artifact]:
        cat = self._repo.catalog
        out = []
        for r in cat.run_artifacts(self.record, kind):
            try:
                out.append(Artifact._from_record(self._repo, cat.get_version(
                    r.project, r.name, r.version or 0)[0]))
            except NotFound:
                continue
        return out

    def finish(self) -> None:
        """Nothing to flush: logging is synchronous.  Kept for wandb compatibility."""

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"<Run {self.project}/{self.id} ({self.job_type})>"


def init(project: str, job_type: str = "", group: str = "", id: str | None = None,
         config: Mapping[str, Any] | None = None, store: str | None = None) -> Run:
    """Start a run in ``project`` on the configured store (or ``store``)."""
    repo = _repo(store)
    run = Run(repo, repo.catalog.create_run(project, job_type, group, id, config))
    repo.attach_run(project, run.id)  # reads through a mount by this process count as use
    return run


class ArtifactCollection:
    """All versions of one artifact name."""

    def __init__(self, repo: Repo, project: str, name: str) -> None:
        self._repo = repo
        col = repo.catalog.get_collection(project, name)
        self.project, self.name, self.type = project, name, col.type
        self.description = col.description

    def versions(self) -> list[Artifact]:
        return [Artifact._from_record(self._repo, r)
                for r in self._repo.catalog.versions(self.project, self.name)]

    @property
    def aliases(self) -> list[str]:
        return [*sorted(self._repo.catalog.aliases(self.project, self.name)), "latest"]

    def delete(self, delete_aliases: bool = True) -> None:
        self._repo.catalog.delete_collection(self.project, self.name, delete_aliases)

    def __repr__(self) -> str:
        return f"<ArtifactCollection {self.project}/{self.name} ({self.type})>"


class Api:
    """Query and edit what is in the store, outside any run."""

    def __init__(self, store: str | None = None) -> None:
        self._repo = _repo(store)

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        rec = self._repo.catalog.resolve(parse_ref(name))
        if type is not None and rec.type != type:
            raise UsageError(f"{rec.label} has type {rec.type!r}, not {type!r}")
        return Artifact._from_record(self._repo, rec)

    def artifact_exists(self, name: str, type: str | None = None) -> bool:
        try:
            self.artifact(name, type)
            return True
        except NotFound:
            return False

    def artifact_collection(self, type_name: str, name: str) -> ArtifactCollection:
        ref = parse_ref(name, allow_ref=False)
        col = ArtifactCollection(self._repo, ref.project, ref.name)
        if col.type != type_name:
            raise UsageError(f"{ref.collection} has type {col.type!r}, not {type_name!r}")
        return col

    def artifact_versions(self, type_name: str, name: str) -> list[Artifact]:
        return self.artifact_collection(type_name, name).versions()

    def run(self, path: str) -> Run:
        return Run(self._repo, self._repo.catalog.find_run(path))
