"""The Python API, shaped like wandb's (SPEC §6): module functions (``init``, ``finish``,
``log_artifact``, ``use_artifact``, ``log_model``, ``use_model``, ``link_model``,
``login``), ``Run``, ``Artifact``, ``Api`` and the collection/type/project objects.

``import artifactfs as wandb`` runs a W&B artifacts script unchanged; where artifactfs differs
the call fails with an error that names the artifactfs way (see README, "Python API").

Modules: _common.py (store, names, current run), pending.py (assembling), artifact.py,
entry.py, run.py, public.py (Api and collections).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UsageError
from . import _common
from .artifact import Artifact
from .entry import ArtifactEntry, Manifest
from .public import Api, ArtifactCollection, ArtifactType, Project
from .run import IGNORED_INIT_ARGS, Run, init_run

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactEntry", "ArtifactType", "Manifest",
           "Project", "Run", "Settings", "current_run", "finish", "init", "link_model",
           "log_artifact", "log_model", "login", "use_artifact", "use_model"]


class Settings(dict[str, Any]):
    """wandb.Settings: accepted by ``init(settings=…)``; nothing in it applies here."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(kw)


def init(project: str | None = None, entity: str | None = None, *, job_type: str | None = None,
         group: str | None = None, name: str | None = None, tags: Iterable[str] | None = None,
         notes: str | None = None, config: Mapping[str, Any] | None = None,
         id: str | None = None, resume: bool | str | None = None, mode: str | None = None,
         store: str | None = None, **kw: Any) -> Run:
    """Start a run (the current one until it finishes or another starts); see run.py."""
    unknown = sorted(set(kw) - IGNORED_INIT_ARGS)
    if unknown:
        raise TypeError(f"init() got unexpected keyword arguments: {', '.join(unknown)}")
    return init_run(project, entity=entity, job_type=job_type, group=group, name=name, tags=tags,
                    notes=notes, config=config, id=id, resume=resume, mode=mode, store=store,
                    dir=kw.get("dir"))


def current_run() -> Run | None:
    """``artifactfs.run``: the current run, or None."""
    return _common.current_run()


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    run = _common.current_run()
    if run is not None:
        run.finish(exit_code, quiet)


def login(*args: Any, **kw: Any) -> bool:
    """Nothing to log in to: the store's own access control applies (file modes, bucket
    policy, the mount's ACLs).  Returns True, as wandb.login does when logged in."""
    return True


def _run(what: str) -> Run:
    run = _common.current_run()
    if run is None:
        raise UsageError(f"call artifactfs.init() before artifactfs.{what}()")
    return run


def log_artifact(artifact_or_path: Artifact | str, name: str | None = None,
                 type: str | None = None, aliases: Iterable[str] | None = None,
                 tags: Iterable[str] | None = None) -> Artifact:
    return _run("log_artifact").log_artifact(artifact_or_path, name, type, aliases, tags)


def use_artifact(artifact_or_name: Artifact | str, type: str | None = None,
                 aliases: Iterable[str] | None = None, use_as: str | None = None) -> Artifact:
    return _run("use_artifact").use_artifact(artifact_or_name, type, aliases, use_as)


def log_model(path: str, name: str | None = None,
              aliases: Iterable[str] | None = None) -> Artifact:
    return _run("log_model").log_model(path, name, aliases)


def use_model(name: str) -> str:
    return _run("use_model").use_model(name)


def link_model(path: str, registered_model_name: str, name: str | None = None,
               aliases: Iterable[str] | None = None) -> Artifact:
    return _run("link_model").link_model(path, registered_model_name, name, aliases)
