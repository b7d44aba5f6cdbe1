"""``init`` and ``Run``: a job that uses and logs artifact versions (wandb's run).

A run is a record in the store (runs/P/ID.json) with lineage markers; the process's current
run (``artifactfs.run``) is the last one ``init`` started and not yet finished.

What is subtle:

* ``init`` takes wandb's arguments.  Those about wandb's server and UI (``settings``,
  ``save_code``, ``sync_tensorboard`` …) are accepted and have nothing to do here;
  ``mode="disabled"`` is refused with a clear error, since versions are always recorded.
  ``resume`` with an ``id`` continues that run (``"must"``: it has to exist, ``"never"``: it
  must not).  A second ``init`` finishes the current run and starts another, like wandb's
  ``reinit="finish_previous"``.
* ``upsert_artifact``/``finish_artifact`` default ``distributed_id`` to the run's group.
* ``use_artifact`` of a pending artifact logs it first (without a producer: the run only
  uses it) and returns it bound to its version, as wandb does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .. import distributed
from ..catalog import RunRecord
from ..errors import NotFound, UsageError
from ..names import check_alias
from ..repo import Repo
from . import _common
from .artifact import Artifact

IGNORED_INIT_ARGS = frozenset({
    "settings", "save_code", "anonymous", "sync_tensorboard", "monitor_gym", "magic",
    "allow_val_change", "force", "config_exclude_keys", "config_include_keys", "tensorboard",
    "fork_from", "resume_from", "reinit", "dir"})


class Run:
    """A job that used and logged artifact versions."""

    def __init__(self, repo: Repo, record: RunRecord, entity: str | None = None,
                 dir: str | None = None) -> None:
        self._repo = repo
        self.record = record
        self._entity = entity
        self.dir = dir or os.getcwd()

    id = property(lambda self: self.record.id)
    project = property(lambda self: self.record.project)
    job_type = property(lambda self: self.record.job_type)
    group = property(lambda self: self.record.group)
    config = property(lambda self: dict(self.record.config))
    tags = property(lambda self: tuple(self.record.tags))
    notes = property(lambda self: self.record.notes)

    @property
    def name(self) -> str:
        return self.record.name or self.record.id

    @property
    def entity(self) -> str:
        return self._entity or _common.default_entity()

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    def _own(self, artifact: Artifact) -> Artifact:
        artifact._entity = artifact._entity or self._entity
        return artifact

    def _artifact_of(self, artifact_or_path: Artifact | str, name: str | None,
                     type: str | None, default_type: str = "unspecified") -> Artifact:
        if isinstance(artifact_or_path, Artifact):
            return self._own(artifact_or_path)
        path = artifact_or_path
        if not os.path.exists(path):
            raise UsageError(f"no such file or directory: {path}")
        base = os.path.basename(os.path.abspath(path))
        art = Artifact(name or f"run-{self.id}-{base}", type or default_type)
        if os.path.isdir(path):
            art.add_dir(path)
        else:
            art.add_file(path)
        return self._own(art)

    def log_artifact(self, artifact_or_path: Artifact | str, name: str | None = None,
                     type: str | None = None, aliases: Iterable[str] | None = None,
                     tags: Iterable[str] | None = None) -> Artifact:
        """Log a pending artifact (or a local file or directory) as this run's output."""
        art = self._artifact_of(artifact_or_path, name, type)
        art._log(self._repo, art.project or self.project,
                 art._wanted_aliases(list(aliases or [])), self.record, list(tags or []))
        return art

    def use_artifact(self, artifact_or_name: Artifact | str, type: str | None = None,
                     aliases: Iterable[str] | None = None, use_as: str | None = None) -> Artifact:
        """Resolve ``[[entity/]project/]name[:REF]`` (or log a pending artifact) and record
        it as this run's input."""
        wanted = [check_alias(a) for a in aliases or []]
        if isinstance(artifact_or_name, Artifact):
            art = self._own(artifact_or_name)
            if art._record is None:
                art._log(self._repo, art.project or self.project, art._wanted_aliases(wanted),
                         None)
                wanted = []
        else:
            rec = self._repo.catalog.resolve(_common.parse(artifact_or_name, self.project))
            art = Artifact._from_record(self._repo, rec, self._entity)
        _, rec = art._logged()
        if type is not None and rec.type != type:
            raise UsageError(f"{rec.label} has type {rec.type!r}, not {type!r}")
        for a in wanted:
            self._repo.catalog.set_alias(rec.project, rec.name, rec.version, a)
        self._repo.catalog.mark_input(self.record, rec)
        if wanted:
            art._bind(self._repo, rec)
        return art

    def upsert_artifact(self, artifact_or_path: Artifact | str, name: str | None = None,
                        type: str | None = None, aliases: Iterable[str] | None = None,
                        distributed_id: str | None = None) -> Artifact:
        """Add this run's files to the shared draft ``distributed_id`` (default: the run's
        group), on any node, until it is finished."""
        art = self._artifact_of(artifact_or_path, name, type)
        project = art.project or self.project
        draft_id = self._draft_id(distributed_id)
        with self._repo.writing(f"upsert {project}/{art._name}") as w:
            changes = art._changes(self._repo, project, w.store)
            distributed.upsert(self._repo, project, art._name, draft_id, changes,
                               writer=self.id, session=w)
        art._entries, art._sources = {}, {}
        return art

    def finish_artifact(self, artifact_or_path: Artifact | str, name: str | None = None,
                        type: str | None = None, aliases: Iterable[str] | None = None,
                        distributed_id: str | None = None) -> Artifact:
        """Commit every upserted file plus this run's own as the next version."""
        art = self._artifact_of(artifact_or_path, name, type)
        project = art.project or self.project
        options = art._commit_options(art._wanted_aliases(list(aliases or [])), self.record)
        draft_id = self._draft_id(distributed_id)
        with self._repo.writing(f"finish {project}/{art._name}") as w:
            changes = art._changes(self._repo, project, w.store)
            rec, _ = distributed.finish(self._repo, project, art._name, draft_id, art.type,
                                        changes, writer=self.id, session=w, **options)
        art._bind(self._repo, rec)
        return art

    def _draft_id(self, distributed_id: str | None) -> str:
        if distributed_id:
            return distributed_id
        if self.group:
            return str(self.group)
        raise UsageError("no distributed_id: pass distributed_id=… or start the runs with "
                         "init(group=…)")

    # --- registry and models ---------------------------------------------------------------
    def link_artifact(self, artifact: Artifact, target_path: str,
                      aliases: Iterable[str] | None = None) -> Artifact:
        """Link a version into the registry (logging it first if it is pending)."""
        if artifact._record is None:
            self.log_artifact(artifact)
        return artifact.link(target_path, list(aliases or []))

    def log_model(self, path: str, name: str | None = None,
                  aliases: Iterable[str] | None = None) -> Artifact:
        """Log a model file or directory as an artifact of type ``model``."""
        return self.log_artifact(self._artifact_of(path, name, "model"), aliases=aliases)

    def use_model(self, name: str) -> str:
        """Use a ``model`` artifact (also a registry link) and download it; returns the
        local path (the file itself for a one-file model)."""
        art = self.use_artifact(name)
        if art.type != "model":
            raise UsageError(f"{art.id} has type {art.type!r}: use_model needs a 'model' "
                             "artifact (use use_artifact for others)")
        return art.file() if art.file_count == 1 else art.download()

    def link_model(self, path: str, registered_model_name: str, name: str | None = None,
                   aliases: Iterable[str] | None = None) -> Artifact:
        """Log a model and link it into ``registry/REGISTERED_MODEL_NAME``."""
        return self.log_model(path, name).link(registered_model_name, list(aliases or []))

    # --- lineage ---------------------------------------------------------------------------
    def logged_artifacts(self) -> list[Artifact]:
        return self._artifacts("outputs")

    def used_artifacts(self) -> list[Artifact]:
        return self._artifacts("inputs")

    def _artifacts(self, kind: str) -> list[Artifact]:
        cat = self._repo.catalog
        out = []
        for r in cat.run_artifacts(self.record, kind):
            try:
                rec = cat.get_version(r.project, r.name, r.version or 0)[0]
            except NotFound:
                continue
            if rec.is_live(cat.project_ttl(rec.project)):
                out.append(Artifact._from_record(self._repo, rec, self._entity))
        return out

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """Logging is synchronous, so nothing is left to flush; the run stops being current."""
        if _common.state.run is self:
            _common.state.run = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"<Run {self.project}/{self.id} ({self.job_type})>"


def init_run(project: str | None = None, *, entity: str | None = None,
             job_type: str | None = None, group: str | None = None, name: str | None = None,
             tags: Iterable[str] | None = None, notes: str | None = None,
             config: Mapping[str, Any] | None = None, id: str | None = None,
             resume: bool | str | None = None, mode: str | None = None,
             store: str | None = None, dir: str | None = None) -> Run:
    """Start (or resume) a run and make it the current one; see the module docstring."""
    if mode not in (None, "online", "offline", "shared"):
        raise UsageError(f"mode={mode!r} is not supported: artifactfs always records runs and "
                         "versions in its store (leave mode unset)")
    repo = _common.open_repo(store)
    project = _common.project_alias(project) if project else _common.default_project()
    if resume in ("must", "never") and not id:
        raise UsageError(f"resume={resume!r} needs id=")
    if id and resume in ("must", "never"):
        try:
            repo.catalog.get_run(project, id)
            exists = True
        except NotFound:
            exists = False
        if resume == "must" and not exists:
            raise NotFound(f"no run {project}/{id} to resume")
        if resume == "never" and exists:
            raise UsageError(f"run {project}/{id} exists and resume='never'")
    record = repo.catalog.create_run(project, job_type or "", group or "", id, config,
                                     name=name or "", tags=list(tags or []), notes=notes or "")
    if _common.state.run is not None:
        _common.state.run.finish()
    repo.attach_run(project, record.id)  # reads through a mount by this process count as use
    run = Run(repo, record, entity, dir)
    _common.state.run = run
    return run


def _with_run(what: str) -> Run:
    run = _common.current_run()
    if run is None:
        raise UsageError(f"call artifactfs.init() before artifactfs.{what}()")
    return run
