"""What the API's classes share: the store of this process, the current run, the default
project and entity, and the name forms wandb accepts.

Names: ``name[:REF]`` (in the default project), ``project/name[:REF]`` and
``entity/project/name[:REF]``.  One store is one team's, so an entity is accepted, checked to
be a valid name and not used to look anything up; ``Artifact.entity`` reports the entity of
the run or ``Api`` (``init(entity=…)``, ``Api(overrides={"entity": …})``,
``$ARTIFACTFS_ENTITY``, ``$WANDB_ENTITY``, else the login name).  W&B's registry projects
(``model-registry``, ``wandb-registry-NAME``) name artifactfs's one registry, ``registry``.
"""

from __future__ import annotations

import getpass
import os
import re
import threading
from typing import TYPE_CHECKING, Any

from .. import config as config_mod
from ..errors import UsageError
from ..names import REGISTRY, Ref, check_name, parse_ref
from ..repo import Repo

if TYPE_CHECKING:
    from .run import Run

_REGISTRY_NAMES = re.compile(r"model-registry|wandb-registry-[A-Za-z0-9._-]+")
_repos: dict[str, Repo] = {}
_lock = threading.Lock()


class _State:
    run: Run | None = None


state = _State()


def current_run() -> Run | None:
    return state.run


def open_repo(store: str | None = None) -> Repo:
    """One repo per store URI for the process (its node cache is shared by all objects)."""
    cfg = config_mod.load()
    uri = store or cfg.store
    with _lock:
        repo = _repos.get(uri)
        if repo is None:
            repo = _repos[uri] = Repo(uri, notify_mounts=True, private=cfg.restricts_reads)
        return repo


def cache_dir() -> str:
    return config_mod.load().cache_dir


def default_project(run_project: str | None = None) -> str:
    """The project of names given without one: ``$ARTIFACTFS_PROJECT``, ``$WANDB_PROJECT``,
    ``project = "…"`` in the config file, then the current run's project (``run_project``),
    else ``uncategorized`` (wandb's)."""
    if os.environ.get("ARTIFACTFS_PROJECT"):
        return config_mod.default_project()
    if os.environ.get("WANDB_PROJECT"):
        return project_alias(os.environ["WANDB_PROJECT"])
    cfg = config_mod.load()
    if cfg.project != config_mod.DEFAULT_PROJECT:
        return config_mod.default_project(cfg)
    return run_project or config_mod.DEFAULT_PROJECT


def default_entity() -> str:
    for var in ("ARTIFACTFS_ENTITY", "WANDB_ENTITY"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def project_alias(project: str) -> str:
    """W&B's registry project names mean the registry."""
    return REGISTRY if _REGISTRY_NAMES.fullmatch(project) else project


def parse(value: Any, default_project: str | None, allow_ref: bool = True,
          what: str = "artifact") -> Ref:
    """``[entity/][project/]name[:REF]`` → a Ref (see the module docstring)."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"invalid {what} name {value!r}")
    body, sep, ref = value.partition(":")
    parts = body.split("/")
    if len(parts) == 3:
        check_name(parts[0], "entity")
        parts = parts[1:]
    if len(parts) == 1:
        if default_project is None:
            raise UsageError(
                f"{what} {value!r} names no project: use PROJECT/{value}, or set a default "
                "project (init(project=…), Api(overrides={'project': …}), $ARTIFACTFS_PROJECT)")
        parts = [default_project, parts[0]]
    if len(parts) != 2:
        raise UsageError(f"invalid {what} name {value!r}: expected "
                         "[ENTITY/][PROJECT/]NAME[:VERSION_OR_ALIAS]")
    return parse_ref(f"{project_alias(parts[0])}/{parts[1]}{sep}{ref}", allow_ref=allow_ref)


def run_path(value: str, default_project: str | None) -> str:
    """``[entity/][project/]run_id`` → ``project/run_id``."""
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) == 3:
        check_name(parts[0], "entity")
        parts = parts[1:]
    if len(parts) == 1 and default_project:
        parts = [default_project, parts[0]]
    if len(parts) == 1:
        return parts[0]  # a bare id: searched in every project
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"invalid run path {value!r}: expected [ENTITY/]PROJECT/RUN_ID")
    return "/".join(parts)
