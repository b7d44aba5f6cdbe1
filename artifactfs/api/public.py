"""``Api`` (wandb's public API): query and edit what is in the store outside any run, plus
``ArtifactCollection``, ``ArtifactType`` and ``Project``.

What is subtle:

* Names are resolved in the default project (``Api(overrides={"project": …})``, else
  ``$ARTIFACTFS_PROJECT``/``$WANDB_PROJECT``/the config's ``project``, else the current run's
  project, as the guide's snippets assume, else ``uncategorized``); see _common.py.
* ``ArtifactCollection`` edits (``name``, ``description``, ``tags``, ``type``) take effect on
  ``save()``; a new ``name`` renames the collection (discovery.py says what that costs).  Until
  then the object keeps answering for the name it was read under.
* ``artifact_exists``/``artifact_collection_exists`` answer False for names that could not
  exist (invalid), as wandb does, instead of raising.
* Tags are searchable: ``artifacts(tags=…)`` and ``artifact_collections(tags=…)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .. import discovery
from ..catalog import Collection
from ..errors import IntegrityError, NotFound, UsageError
from ..names import check_name, check_project
from ..repo import Repo
from . import _common
from .artifact import Artifact
from .run import Run

log = logging.getLogger(__name__)


class ArtifactCollection:
    """All versions of one artifact name."""

    def __init__(self, repo: Repo, project: str, name: str, entity: str | None = None,
                 col: Collection | None = None) -> None:
        self._repo = repo
        self._entity = entity
        self._load(col or repo.catalog.get_collection(project, name))

    def _load(self, col: Collection) -> None:
        self._col = col
        self.project, self._saved_name = col.project, col.name
        self.name, self.type, self.description = col.name, col.type, col.description
        self.tags: list[str] = list(col.tags)

    entity = property(lambda self: self._entity or _common.default_entity())
    created_at = property(lambda self: self._col.created_at)
    id = property(lambda self: f"{self.project}/{self._saved_name}")

    def is_sequence(self) -> bool:
        return True

    def artifacts(self, per_page: int = 50) -> list[Artifact]:
        """The live versions, oldest first; a damaged version record is left out (logged)."""
        damaged: dict[int, str] = {}
        recs = self._repo.catalog.versions(self.project, self._saved_name, damaged=damaged)
        for why in damaged.values():
            log.warning("%s", why)
        return [Artifact._from_record(self._repo, r, self._entity) for r in recs]

    versions = artifacts

    @property
    def aliases(self) -> list[str]:
        names = sorted(self._repo.catalog.aliases(self.project, self._saved_name))
        try:
            latest = self._repo.catalog.latest(self.project, self._saved_name)
        except IntegrityError:  # a damaged record above the highest live version
            latest = None
        return [*names, "latest"] if latest else names

    def change_type(self, type: str) -> None:
        """Give the collection and all its versions another type (now)."""
        discovery.change_type(self._repo, self.project, self._saved_name, type)
        self._load(self._repo.catalog.get_collection(self.project, self._saved_name))

    def save(self) -> None:
        """Store edits of ``name`` (a rename), ``type``, ``description`` and ``tags``."""
        name = check_name(self.name, "artifact name")
        if self.type != self._col.type:
            discovery.change_type(self._repo, self.project, self._saved_name, self.type)
        if self.description != self._col.description or sorted(set(self.tags)) != sorted(
                self._col.tags):
            discovery.edit_collection(self._repo, self.project, self._saved_name,
                                      description=self.description, tags=self.tags)
        if name != self._saved_name:
            discovery.rename(self._repo, self.project, self._saved_name, name)
        self._load(self._repo.catalog.get_collection(self.project, name))

    def delete(self, delete_aliases: bool = True) -> int:
        """Soft-delete every version; the name may then be used again, with any type."""
        try:
            return discovery.delete_collection(self._repo, self.project, self._saved_name,
                                               delete_aliases)
        except UsageError as e:
            if "--delete-aliases" in str(e):
                raise UsageError(str(e).replace("--delete-aliases", "delete_aliases=True")) \
                    from None
            raise

    def __repr__(self) -> str:
        return f"<ArtifactCollection {self.project}/{self._saved_name} ({self.type})>"


class ArtifactType:
    """The collections of one type in a project."""

    def __init__(self, repo: Repo, project: str, name: str, entity: str | None = None) -> None:
        self._repo, self.project, self.name, self._entity = repo, project, name, entity

    @property
    def type(self) -> str:
        return self.name

    def collections(self, per_page: int = 50) -> list[ArtifactCollection]:
        return [ArtifactCollection(self._repo, c.project, c.name, self._entity, c)
                for c in discovery.collections(self._repo, self.project, self.name)]

    def collection(self, name: str) -> ArtifactCollection:
        col = ArtifactCollection(self._repo, self.project, name, self._entity)
        if col.type != self.name:
            raise NotFound(f"no {self.name} artifact {self.project}/{name}")
        return col

    def __repr__(self) -> str:
        return f"<ArtifactType {self.project}:{self.name}>"


class Project:
    def __init__(self, api: Api, name: str) -> None:
        self._api, self.name = api, name

    entity = property(lambda self: self._api.entity)

    def artifact_types(self) -> list[ArtifactType]:
        return self._api.artifact_types(self.name)

    def __repr__(self) -> str:
        return f"<Project {self.name}>"


class Api:
    """Query and edit what is in the store, outside any run."""

    def __init__(self, overrides: Mapping[str, Any] | None = None, timeout: int | None = None,
                 api_key: str | None = None, store: str | None = None) -> None:
        overrides = dict(overrides or {})
        self._repo = _common.open_repo(store or overrides.get("store"))
        run = _common.current_run()
        project = overrides.get("project") or _common.default_project(
            run.project if run is not None else None)
        self.default_project = _common.project_alias(str(project))
        self._chosen_project = overrides.get("project")  # searches stay in it if given
        self._entity = overrides.get("entity")

    @property
    def entity(self) -> str:
        return str(self._entity or _common.default_entity())

    def _ref(self, name: str, allow_ref: bool = True) -> Any:
        return _common.parse(name, self.default_project, allow_ref=allow_ref)

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """A version: ``[[entity/]project/]name[:VERSION_OR_ALIAS]`` (default ``latest``)."""
        rec = self._repo.catalog.resolve(self._ref(name))
        if type is not None and rec.type != type:
            raise UsageError(f"{rec.label} has type {rec.type!r}, not {type!r}")
        return Artifact._from_record(self._repo, rec, self._entity)

    def artifact_exists(self, name: str, type: str | None = None) -> bool:
        try:
            self.artifact(name, type)
            return True
        except (NotFound, UsageError):
            return False

    def artifact_collection(self, type_name: str | None = None, name: str | None = None, *,
                            type: str | None = None,
                            collection: str | None = None) -> ArtifactCollection:
        type_name, name = type_name or type, name or collection
        if not name:
            raise UsageError("artifact_collection needs a name (and a type)")
        ref = self._ref(name, allow_ref=False)
        col = ArtifactCollection(self._repo, ref.project, ref.name, self._entity)
        if type_name is not None and col.type != type_name:
            raise UsageError(f"{ref.collection} has type {col.type!r}, not {type_name!r}")
        return col

    def artifact_collection_exists(self, name: str, type: str | None = None) -> bool:
        try:
            col = self.artifact_collection(type, name)
        except (NotFound, UsageError):
            return False
        return col._col.deleted_at is None or bool(col.artifacts())

    def artifact_versions(self, type_name: str, name: str,
                          per_page: int = 50) -> list[Artifact]:
        return self.artifact_collection(type_name, name).artifacts()

    def artifacts(self, type_name: str | None = None, name: str | None = None,
                  per_page: int = 50, tags: str | Iterable[str] | None = None) -> list[Artifact]:
        """Versions of ``name`` (all, or those carrying every tag in ``tags``); with no
        name, every version carrying the tags (in ``overrides["project"]`` if given)."""
        want = {tags} if isinstance(tags, str) else set(tags or ())
        if name is not None:
            out = self.artifact_collection(type_name, name).artifacts()
            return [a for a in out if want <= set(a.tags)]
        if not want:
            raise UsageError("artifacts() needs a name, or tags= to search by")
        first, *rest = sorted(want)
        where = _common.project_alias(str(self._chosen_project)) if self._chosen_project \
            else None
        found = discovery.search(self._repo, first, where).versions
        return [Artifact._from_record(self._repo, r, self._entity) for r in found
                if set(rest) <= set(r.tags) and (type_name is None or r.type == type_name)]

    def artifact_collections(self, project_name: str | None = None,
                             type_name: str | None = None, per_page: int = 50,
                             tags: str | Iterable[str] | None = None) -> list[ArtifactCollection]:
        """Collections of a project (of one type, carrying every tag in ``tags``)."""
        project = self._project(project_name)
        want = {tags} if isinstance(tags, str) else set(tags or ())
        return [ArtifactCollection(self._repo, c.project, c.name, self._entity, c)
                for c in discovery.collections(self._repo, project, type_name)
                if want <= set(c.tags)]

    def _project(self, project: str | None) -> str:
        p = project.rpartition("/")[2] if project else self.default_project
        if not p:
            raise UsageError("no project: pass one, or Api(overrides={'project': …})")
        return check_project(_common.project_alias(p))

    def artifact_type(self, type_name: str, project: str | None = None) -> ArtifactType:
        return ArtifactType(self._repo, self._project(project), check_name(type_name, "type"),
                            self._entity)

    def artifact_types(self, project: str | None = None) -> list[ArtifactType]:
        p = self._project(project)
        return [ArtifactType(self._repo, p, t, self._entity)
                for t in discovery.types(self._repo, p)]

    def projects(self, entity: str | None = None, per_page: int = 200) -> list[Project]:
        return [Project(self, p) for p in discovery.projects(self._repo)]

    def project(self, name: str, entity: str | None = None) -> Project:
        p = self._project(name)
        if p not in discovery.projects(self._repo):
            raise NotFound(f"no project {p}")
        return Project(self, p)

    def run(self, path: str) -> Run:
        """A run by ``[entity/]project/run_id`` (or a bare id)."""
        rec = self._repo.catalog.find_run(_common.run_path(path, None))
        return Run(self._repo, rec, self._entity)

    def flush(self) -> None:
        """Nothing is cached between calls that could go stale."""
