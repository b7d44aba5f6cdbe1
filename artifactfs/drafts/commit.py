"""Draft → version (the commit engine), and the daemon's side of the draft control channel.

:func:`commit_draft` freezes the draft, refuses (or waits for) files still open for writing,
ingests only the staged files, builds only the tree nodes on changed paths (unchanged base
entries are reused: neither read nor re-hashed), creates the version record, applies aliases
and drops the draft.  :func:`upsert_draft` and :func:`finish_draft` do the same for a
distributed draft (``distributed.py``): the first hands this writer's files to the shared draft
in the store, the second commits them all.  :func:`handle_request` serves one JSON request of
the control channel (wire format in docs/drafts.md); the daemon's control server
(``fs/control.py``) calls it in a worker thread with the caller's uid from ``SO_PEERCRED``.

Subtle parts:

* Crash safety follows the store's write order: objects → trees → version record → aliases,
  and the draft is removed only after the record exists.  Just before the record is created,
  ``intent.json`` in the draft names the number it is about to take; a re-run after a crash
  finds that version (same root) and finishes (aliases, run output, drop) instead of creating a
  second one.  A crash before it leaves only unreferenced objects, for gc.
* "Content equal to the base creates no version" compares with the *base*, not only with the
  latest version (which :meth:`Catalog.commit_version` does), so the tree is built here rather
  than through :meth:`Repo.commit_entries`; that also keeps a 50 000-entry directory from
  being encoded twice.
* The draft stays frozen for the whole commit; on any failure it is thawed and left intact.
"""

from __future__ import annotations

import os
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import distributed, errors, ingest, model
from ..catalog import RunRecord, VersionRecord
from ..errors import ArtifactfsError, Busy, NotFound, UsageError
from ..gcsync import WriteSession
from ..mount.control import MAX_WAIT
from ..names import Ref, check_alias, check_name, check_project, parse_ref
from ..repo import Repo
from .area import DraftArea
from .draft import Draft

DRAFT_OPS = ("draft.create", "draft.list", "draft.discard", "commit", "upsert")
MayWrite = Callable[[int, str], bool]  # (uid, project) -> may create drafts and commit
Report = Callable[[int, int], None]  # (bytes stored so far, bytes to store): commit progress
# tests only: "STEP" raises once there, "STEP:exit" dies, "STEP:sleep=SEC" waits there
CRASH_ENV = "ARTIFACTFS_TEST_CRASH"


def _checkpoint(step: str) -> None:
    """A named point between commit steps (tests inject crashes here, also in a daemon)."""
    spec = os.environ.get(CRASH_ENV)
    if spec and spec.partition(":")[0] == step:
        if spec.endswith(":exit"):
            os._exit(70)
        if ":sleep=" in spec:
            time.sleep(float(spec.partition(":sleep=")[2]))
            return
        del os.environ[CRASH_ENV]
        raise ArtifactfsError(f"injected failure at commit step {step!r} ({CRASH_ENV})")


# --- the commit engine ---------------------------------------------------------------------

def artifact_type(repo: Repo, project: str, name: str, type_: str | None) -> str:
    """``--type``: required for a new artifact; for an existing one it must match."""
    try:
        have = repo.catalog.get_collection(project, name).type
    except NotFound:
        if not type_:
            raise UsageError(f"artifact {project}/{name} does not exist yet: give its type "
                             "with --type") from None
        return check_name(type_, "artifact type")
    if type_ and type_ != have:
        raise errors.TypeConflict(
            f"artifact {project}/{name} already exists with type {have!r}, not {type_!r}")
    return have


def find_or_create_run(repo: Repo, run: str, project: str,
                       may_use: Callable[[str], bool] | None = None) -> RunRecord:
    """``--run ID`` or ``--run PROJECT/ID``: the run, created (in the draft's project) if new.
    A bare ID is looked for in the draft's project, then in the others; ``may_use`` (the
    caller's write rights) limits both the search and the project named."""
    p, _, rid = run.rpartition("/")
    check_name(rid, "run id")
    if p:
        check_project(p)
        if may_use is not None and not may_use(p):
            raise errors.PermissionDenied(f"you may not record runs in project {p}")
        places = [p]
    else:
        places = [project, *(q for q in repo.store.list_dirs("runs/")
                             if q != project and (may_use is None or may_use(q)))]
    for q in places:
        try:
            return repo.catalog.get_run(q, rid)
        except NotFound:
            continue
    return repo.catalog.create_run(p or project, run_id=rid)


@dataclass
class _Options:
    type_: str
    aliases: list[str]
    description: str
    metadata: dict[str, Any]
    inputs: list[VersionRecord]


def _options(repo: Repo, draft: Draft, type_: str | None, aliases: Iterable[str],
             description: str | None, metadata: Mapping[str, Any] | None, run: str | None,
             inputs: Iterable[str]) -> _Options:
    """Every option checked before any work (so a mistake costs nothing)."""
    m, base = draft.meta, draft.base
    alias_list = [check_alias(a) for a in aliases]
    type_ = artifact_type(repo, m.project, m.name, type_)
    input_refs = [parse_ref(r) for r in inputs]
    if input_refs and not run:
        raise UsageError("--input needs --run: inputs are recorded on a run")
    input_recs = [repo.resolve(r) for r in input_refs]
    if description is None:
        description = base.description if base else ""
    meta = dict(metadata) if metadata is not None else dict(base.metadata) if base else {}
    return _Options(type_, alias_list, description, meta, input_recs)


def _freeze(draft: Draft, wait: float, open_paths: Iterable[str] = ()) -> None:
    """Freeze the draft once no file of it is open for writing (waiting up to ``wait`` s)."""
    draft.freeze()
    try:
        busy = sorted(set(draft.open_writers(wait)) | set(open_paths))
        if busy:
            raise Busy(f"draft {draft.label} has files open for writing: {', '.join(busy)}")
    except BaseException:
        draft.thaw()
        raise


def _run_of(repo: Repo, draft: Draft, run: str | None, opts: _Options,
            may_run: Callable[[str], bool] | None = None) -> RunRecord | None:
    run_rec = find_or_create_run(repo, run, draft.meta.project, may_run) if run else None
    for r in opts.inputs:
        assert run_rec is not None
        repo.catalog.mark_input(run_rec, r)
    return run_rec


def commit_draft(
    area: DraftArea, draft: Draft, repo: Repo, *, type_: str | None = None,
    aliases: Iterable[str] = (), description: str | None = None,
    metadata: Mapping[str, Any] | None = None, run: str | None = None,
    inputs: Iterable[str] = (), open_paths: Iterable[str] = (), wait: float = 0.0,
    report: Report | None = None, load: model.Loader | None = None,
    index: model.Indexer | None = None, may_run: Callable[[str], bool] | None = None,
) -> tuple[VersionRecord, bool]:
    """Turn ``draft`` into the next version; returns ``(record, created)``.

    ``created`` is False when the content equals the base (the base is returned) or the latest
    version.  ``open_paths``: files the caller knows are open for writing (besides those the
    draft tracks); ``wait``: seconds to wait for writers to close before failing with Busy.
    ``description``/``metadata`` left as ``None`` keep the base's.  ``load``: where the tree
    nodes on changed paths are read (default: the store, through the catalog), ``index`` where the
    parts of split directories are listed (likewise).  ``may_run``: the projects whose runs
    the caller may use (see :func:`find_or_create_run`).
    """
    opts = _options(repo, draft, type_, aliases, description, metadata, run, inputs)
    _freeze(draft, wait, open_paths)
    try:
        run_rec = _run_of(repo, draft, run, opts, may_run)
        recovered = _recover(draft, repo, opts.aliases)
        if recovered is not None:
            rec, created = recovered, True
        else:
            rec, created = _build(draft, repo, opts.type_, opts.aliases, opts.description,
                                  opts.metadata, run_rec, report, load, index)
        _checkpoint("version-created")
        area.discard(draft)  # a rename: the staging files are deleted in the background
        _checkpoint("draft-dropped")
        return rec, created
    finally:
        draft.thaw()


def _changes(draft: Draft, w: WriteSession, report: Report | None = None) -> dict[str, Any]:
    """The draft's changes from its base, with its new and modified files stored."""
    plan = draft.plan()
    changes: dict[str, Any] = dict(plan.changes)
    changes.update(plan.stored(ingest.store_files(w.store, plan.sources,
                                                  _counter(plan.sources, report))))
    _checkpoint("ingested")
    return changes


def _counter(sources: Iterable[ingest.Source], report: Report | None
             ) -> ingest.Progress | None:
    """Ingest's byte increments (from worker threads) as ``report(done, total)`` calls."""
    if report is None:
        return None
    total = sum(s.size for s in sources if s.kind == "file")
    done = 0
    lock = threading.Lock()

    def progress(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            now = done
        report(now, total)

    report(0, total)
    return progress


def has_parts(repo: Repo, draft: Draft) -> bool:
    """True when writers upserted files for this draft's id (a distributed draft)."""
    m = draft.meta
    prefix = f"drafts/{m.project}/{m.name}/{m.id}/parts/"
    return next(iter(repo.store.list(prefix)), None) is not None


def upsert_draft(area: DraftArea, draft: Draft, repo: Repo, writer: str, *,
                 wait: float = 0.0, report: Report | None = None) -> int:
    """Hand this draft's new and changed files to the shared draft of its id in the store
    (SPEC §4, distributed drafts), then drop the local draft.  Returns the number of entries
    this writer has in the shared draft.  A distributed draft only adds or replaces files:
    removals are refused (the finishing commit may remove)."""
    m = draft.meta
    _freeze(draft, wait)
    try:
        plan = draft.plan()
        removed = sorted(p for p, e in plan.changes.items() if e is None)
        if removed:
            shown = ", ".join(removed[:20]) + (f" (and {len(removed) - 20} more)"
                                               if len(removed) > 20 else "")
            raise UsageError(f"upsert can only add or replace files, but draft {draft.label} "
                             f"removes: {shown}; remove them in the finishing commit instead")
        changes = dict(plan.changes)
        with repo.writing(f"upsert {draft.label}") as w:
            changes.update(plan.stored(ingest.store_files(w.store, plan.sources,
                                                          _counter(plan.sources, report))))
            count = distributed.upsert(repo, m.project, m.name, m.id, changes, writer, w)
        area.discard(draft)
        return count
    finally:
        draft.thaw()


def finish_draft(
    area: DraftArea, draft: Draft, repo: Repo, writer: str, *, type_: str | None = None,
    aliases: Iterable[str] = (), description: str | None = None,
    metadata: Mapping[str, Any] | None = None, run: str | None = None,
    inputs: Iterable[str] = (), wait: float = 0.0, report: Report | None = None,
    may_run: Callable[[str], bool] | None = None,
) -> tuple[VersionRecord, bool]:
    """Commit a distributed draft: every upserted part plus this draft's own changes, on this
    draft's base.  Two writers giving different content for a path fail (paths and writers
    named) and leave the draft intact; after the finish, upserts to the id fail."""
    m = draft.meta
    opts = _options(repo, draft, type_, aliases, description, metadata, run, inputs)
    _freeze(draft, wait)
    try:
        run_rec = _run_of(repo, draft, run, opts, may_run)
        with repo.writing(f"finish {draft.label}") as w:
            changes = _changes(draft, w, report)
            rec, created = distributed.finish(
                repo, m.project, m.name, m.id, opts.type_, changes, writer, base=draft.base,
                description=opts.description, metadata=opts.metadata, aliases=opts.aliases,
                run=f"{run_rec.project}/{run_rec.id}" if run_rec else None, session=w)
        _checkpoint("version-created")
        area.discard(draft)
        return rec, created
    finally:
        draft.thaw()


def _build(draft: Draft, repo: Repo, type_: str, aliases: list[str], description: str,
           metadata: dict[str, Any], run: RunRecord | None,
           report: Report | None, load: model.Loader | None = None,
           index: model.Indexer | None = None) -> tuple[VersionRecord, bool]:
    with repo.writing(f"commit {draft.label}") as w:
        return _build_in(draft, repo, w, type_, aliases, description, metadata, run, report,
                         load, index)


def _build_in(draft: Draft, repo: Repo, w: WriteSession, type_: str, aliases: list[str],
              description: str, metadata: dict[str, Any], run: RunRecord | None,
              report: Report | None, load: model.Loader | None,
              index: model.Indexer | None) -> tuple[VersionRecord, bool]:
    m, base, cat = draft.meta, draft.base, repo.catalog
    changes = _changes(draft, w, report)
    nodes = _Deferred(w.save_node, load or cat.load_node, index or cat.load_index)
    root = ingest.build_tree(nodes.save, nodes.load, base.root if base else None, changes,
                             nodes.index)
    if base is not None and root.digest == base.digest:
        current = cat.get_version(m.project, m.name, base.version)[0]
        if current.is_live(cat.project_ttl(m.project)):
            _checkpoint("trees-built")
            for a in aliases:
                cat.set_alias(m.project, m.name, base.version, a)
            return current, False
    nodes.flush()
    _checkpoint("trees-built")

    def intent(n: int) -> None:
        draft.save_intent({"version": n, "root": root.oid, "digest": root.digest})
        _checkpoint("intent-saved")

    return cat.commit_version(
        m.project, m.name, type_, root, description=description, metadata=metadata,
        aliases=aliases, run=f"{run.project}/{run.id}" if run else None,
        base=base.version if base else None, before_create=intent, session=w)


class _Deferred:
    """Tree nodes built for a commit, stored only once a version will refer to them (an
    unchanged commit stores none).  A node read back while building (the empty directory a
    new directory starts from) first stores everything built so far, children first."""

    def __init__(self, save: model.Saver, load: model.Loader, index: model.Indexer) -> None:
        self._save, self._load, self._index = save, load, index
        self._built: dict[str, model.Node] = {}

    def save(self, node: model.Node) -> None:
        self._built.setdefault(node.oid, node)

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


def _recover(draft: Draft, repo: Repo, aliases: list[str]) -> VersionRecord | None:
    """The version an earlier, interrupted commit of this draft created, finished; or None."""
    it = draft.intent()
    if not it or not isinstance(it.get("version"), int):
        return None
    m, cat = draft.meta, repo.catalog
    try:
        rec = cat.get_version(m.project, m.name, it["version"])[0]
    except NotFound:
        return None
    if rec.root != it.get("root") or rec.deleted_at is not None:
        return None
    for a in aliases:
        cat.set_alias(m.project, m.name, rec.version, a)
    if rec.run:
        cat._mark_output(rec.run, rec)  # idempotent; the crash may have come before it
    return rec


# --- the control channel: server side --------------------------------------------------------


def error_reply(e: BaseException) -> dict[str, Any]:
    msg = str(e)
    if isinstance(e, OSError) and e.strerror:
        msg = e.strerror + (f": {e.filename}" if e.filename else "")
    return {"ok": False, "error": msg, "kind": type(e).__name__, "errno": errors.errno_for(e)}


def new_draft_id() -> str:
    return "d" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(7))


def _field(req: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           default: Any = None) -> Any:
    v = req.get(key, default)
    if v is not None and (not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool)):
        raise UsageError(f"request field {key!r} has the wrong type")
    return v


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
    d = area.get(_field(req, "project", str, ""), _field(req, "name", str, ""),
                 _field(req, "id", str, ""))
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
    wait = float(_field(request, "wait", (int, float), 0))
    if not 0 <= wait <= MAX_WAIT:
        raise UsageError(f"invalid wait {wait!r}: between 0 and {MAX_WAIT:.0f} seconds")
    d = _draft_of(request, rights, area)
    if request.get("op") == "upsert":
        n = upsert_draft(area, d, repo, writer, wait=wait, report=report)
        return {"ok": True, "entries": n, "writer": writer}
    kw: dict[str, Any] = {
        "type_": _field(request, "type", str),
        "aliases": _field(request, "aliases", list, []),
        "description": _field(request, "description", str),
        "metadata": _field(request, "metadata", dict), "run": _field(request, "run", str),
        "inputs": _field(request, "inputs", list, []), "wait": wait, "may_run": rights.write}
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
    project = check_project(_field(req, "project", str, ""))
    name = check_name(_field(req, "name", str, ""), "artifact name")
    if not rights.write(project):
        raise errors.PermissionDenied(f"you may not create drafts in project {project}")
    ref = _field(req, "ref", str)
    base = repo.resolve(Ref(project, name, ref)) if ref and ref != "latest" \
        else repo.catalog.latest(project, name)
    draft_id = _field(req, "id", str)
    for _ in range(10):
        try:
            return area.create(project, name, draft_id or new_draft_id(), rights.uid, base)
        except errors.AlreadyExists:
            if draft_id:
                raise
    raise ArtifactfsError("could not pick a free draft id")
