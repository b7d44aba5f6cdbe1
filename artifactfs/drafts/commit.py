"""Draft → version: the commit engine, callable with no daemon (tests and tools call it so).

:func:`commit_draft` freezes the draft, refuses (or waits for) files still open for writing,
ingests only the staged files, builds only the tree nodes on changed paths (unchanged base
entries are reused: neither read nor re-hashed), creates the version record, applies aliases
and drops the draft.  :func:`upsert_draft` and :func:`finish_draft` do the same for a
distributed draft (``distributed.py``): the first hands this writer's files to the shared draft
in the store, the second commits them all.  The daemon reaches them through its control
requests (``mount/requests.py``); this module knows nothing of the channel.

Subtle parts:

* Crash safety follows the store's write order: objects → trees → version record → aliases,
  and the draft is removed only after the record exists.  Just before the record is created,
  ``intent.json`` in the draft names the number it is about to take; a re-run after a crash
  finds that version (same root) and finishes (aliases, run output, drop) instead of creating a
  second one.  A crash before it leaves only unreferenced objects, for gc.
* The version is built by :meth:`Repo.commit_entries`, the engine ``put`` and the API use
  too, with ``keep_base``: "content equal to the base creates no version" compares with the
  *base*, not only with the latest version (which :meth:`Catalog.commit_version` does), and
  the tree nodes are stored only once a version will refer to them.
* The draft stays frozen for the whole commit; on any failure it is thawed and left intact.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import distributed, errors, ingest, model
from ..catalog import RunRecord, VersionRecord
from ..errors import ArtifactfsError, Busy, IntegrityError, NotFound, UsageError
from ..gcsync import WriteSession
from ..names import check_alias, check_name, check_project, parse_ref
from ..repo import Repo
from .area import DraftArea
from .draft import Draft

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
        lost = draft.lost_writes()
        if lost:
            raise IntegrityError(f"draft {draft.label} lost writes after its files were "
                                 f"closed (write them again or remove them): {'; '.join(lost)}")
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
    """The draft's changes stored, then the version built by the one commit engine
    (:meth:`Repo.commit_entries`), comparing with the base; the intent is saved just before
    the record is created (see the module docstring)."""
    m, base = draft.meta, draft.base
    built: list[model.Node] = []

    def trees_built(root: model.Node) -> None:
        built.append(root)
        _checkpoint("trees-built")

    def intent(n: int) -> None:
        root = built[-1]
        draft.save_intent({"version": n, "root": root.oid, "digest": root.digest})
        _checkpoint("intent-saved")

    with repo.writing(f"commit {draft.label}") as w:
        changes = _changes(draft, w, report)
        return repo.commit_entries(
            m.project, m.name, type_, changes, base=base, session=w, load=load, index=index,
            keep_base=True, on_built=trees_built, description=description, metadata=metadata,
            aliases=aliases, run=f"{run.project}/{run.id}" if run else None,
            before_create=intent)


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

