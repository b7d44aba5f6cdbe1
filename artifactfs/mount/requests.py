"""The daemon's side of the draft requests of the control channel (docs/control.md).

:func:`handle_request` serves ``draft.create``, ``draft.list``, ``draft.discard``, ``commit``
and ``upsert`` for the caller ``peer_uid`` (from ``SO_PEERCRED``): it decodes the request
(``protocol.py``), asks the caller's rights, and calls the drafts area and the commit engine
(``drafts/commit.py``), which know nothing of the channel.  The daemon runs it in a worker
thread (``daemon.py``: per-uid and commit slots, progress lines, the kernel's caches after a
commit or discard).

What is subtle: rights are asked anew on every request (:class:`Rights`), against the config
and groups as they are now, so a user who left a project's writers loses his drafts of it;
``--run`` and ``--input`` rights are checked before anything is resolved, so a refusal tells
nothing about which versions or runs exist.  User errors never raise: they are replies.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import errors, model
from ..catalog import VersionRecord
from ..drafts.area import DraftArea
from ..drafts.commit import Report, commit_draft, finish_draft, has_parts, upsert_draft
from ..drafts.draft import Draft
from ..errors import ArtifactfsError, Busy, UsageError
from ..names import Ref, check_name, check_project, parse_ref
from ..repo import Repo
from .draftport import MayWrite
from .protocol import MAX_WAIT, error_reply, field


def new_draft_id() -> str:
    return "d" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(7))


@dataclass(frozen=True)
class Rights:
    """The caller of one request and what the config lets him do (SPEC §9), asked anew for
    every request: a user who left a project's writers loses his drafts of it."""
    uid: int
    may_write: MayWrite | None = None
    may_read: MayWrite | None = None

    def write(self, project: str) -> bool:
        return self.uid == 0 or self.may_write is None or self.may_write(self.uid, project)

    def read(self, project: str) -> bool:
        return self.uid == 0 or self.may_read is None or self.may_read(self.uid, project)

    def check_lineage(self, run: str | None, inputs: list[Any]) -> None:
        """``--input`` versions must be readable and an explicit ``--run P/ID`` writable by
        the caller, checked before anything is resolved: a refusal tells nothing about which
        versions or runs exist."""
        for ref in inputs:
            project = parse_ref(str(ref)).project
            if not self.read(project):
                raise errors.PermissionDenied(f"--input {ref}: you may not read project "
                                              f"{project}")
        p = (run or "").rpartition("/")[0]
        if p and not self.write(check_project(p)):
            raise errors.PermissionDenied(f"--run {run}: you may not record runs in project {p}")


def _draft_of(req: Mapping[str, Any], rights: Rights, area: DraftArea) -> Draft:
    d = area.get(field(req, "project", str, ""), field(req, "name", str, ""),
                 field(req, "id", str, ""))
    d.check_access(rights.uid)
    if not rights.write(d.meta.project):
        raise errors.PermissionDenied(
            f"you may not write project {d.meta.project} (any more): draft {d.label} stays "
            "for an administrator to discard")
    return d


def _draft_json(d: Draft) -> dict[str, Any]:
    m = d.meta
    return {"path": d.rel_path, "project": m.project, "name": m.name, "id": m.id,
            "owner": m.owner, "created_at": m.created_at, "base": d.base.label if d.base else None}


def handle_request(
    request: Mapping[str, Any], peer_uid: int, area: DraftArea, repo: Repo, *,
    may_write: MayWrite | None = None, may_read: MayWrite | None = None,
    on_commit: Callable[[VersionRecord, bool], None] | None = None,
    open_paths: Callable[[Draft], Iterable[str]] | None = None,
    writer: str = "local", load: model.Loader | None = None,
    index: model.Indexer | None = None, report: Report | None = None,
) -> dict[str, Any]:
    """Serve one control request for the caller ``peer_uid``; never raises for user errors.

    Blocking (store I/O, hashing): the daemon runs it in a worker thread.  ``may_write`` and
    ``may_read`` are the config's rules (SPEC §9), asked on every request.  ``on_commit`` lets
    the daemon show a new version at once; ``open_paths`` reports the draft's files the mount
    has open for writing that the draft does not track itself; ``writer`` names this node and
    mount in distributed drafts (the caller's uid is added: two users are two writers);
    ``load`` and ``index`` are the commit engine's readers of tree nodes (see
    :func:`commit_draft`); ``report`` hears the bytes a commit or upsert stores.
    """
    rights = Rights(peer_uid, may_write, may_read)
    try:
        op = request.get("op")
        if op == "draft.list":
            mine = area.list(None if peer_uid == 0 else peer_uid)
            return {"ok": True, "drafts": [_draft_json(d) for d in mine
                                           if rights.write(d.meta.project)]}
        if op == "draft.create":
            return {"ok": True, **_draft_json(_create(request, rights, area, repo))}
        if op == "draft.discard":
            d = _draft_of(request, rights, area)
            if d.frozen:
                raise Busy(f"draft {d.label} is being committed")
            area.discard(d)
            return {"ok": True}
        if op in ("commit", "upsert"):
            return _commit_request(request, rights, area, repo, on_commit, open_paths,
                                   f"{writer}-u{peer_uid}", load, index, report)
        raise UsageError(f"unknown request {op!r}")
    except (ArtifactfsError, OSError) as e:
        return error_reply(e)
    except (TypeError, ValueError) as e:
        return error_reply(UsageError(f"malformed request: {e}"))


def _commit_request(
    request: Mapping[str, Any], rights: Rights, area: DraftArea, repo: Repo,
    on_commit: Callable[[VersionRecord, bool], None] | None,
    open_paths: Callable[[Draft], Iterable[str]] | None, writer: str,
    load: model.Loader | None, index: model.Indexer | None, report: Report | None,
) -> dict[str, Any]:
    wait = float(field(request, "wait", (int, float), 0))
    if not 0 <= wait <= MAX_WAIT:
        raise UsageError(f"invalid wait {wait!r}: between 0 and {MAX_WAIT:.0f} seconds")
    d = _draft_of(request, rights, area)
    if request.get("op") == "upsert":
        n = upsert_draft(area, d, repo, writer, wait=wait, report=report)
        return {"ok": True, "entries": n, "writer": writer}
    kw: dict[str, Any] = {
        "type_": field(request, "type", str),
        "aliases": field(request, "aliases", list, []),
        "description": field(request, "description", str),
        "metadata": field(request, "metadata", dict), "run": field(request, "run", str),
        "inputs": field(request, "inputs", list, []), "wait": wait, "may_run": rights.write}
    rights.check_lineage(kw["run"], kw["inputs"])
    distributed_draft = has_parts(repo, d)
    if distributed_draft:
        rec, created = finish_draft(area, d, repo, writer, **kw, report=report)
    else:
        rec, created = commit_draft(area, d, repo, **kw, load=load, index=index,
                                    report=report,
                                    open_paths=open_paths(d) if open_paths else ())
    if on_commit is not None:
        on_commit(rec, created)
    return {"ok": True, "label": rec.label, "version": rec.version, "created": created,
            "digest": rec.digest, "distributed": distributed_draft}


def _create(req: Mapping[str, Any], rights: Rights, area: DraftArea, repo: Repo) -> Draft:
    project = check_project(field(req, "project", str, ""))
    name = check_name(field(req, "name", str, ""), "artifact name")
    if not rights.write(project):
        raise errors.PermissionDenied(f"you may not create drafts in project {project}")
    ref = field(req, "ref", str)
    base = repo.resolve(Ref(project, name, ref)) if ref and ref != "latest" \
        else repo.catalog.latest(project, name)
    draft_id = field(req, "id", str)
    for _ in range(10):
        try:
            return area.create(project, name, draft_id or new_draft_id(), rights.uid, base)
        except errors.AlreadyExists:
            if draft_id:
                raise
    raise ArtifactfsError("could not pick a free draft id")
