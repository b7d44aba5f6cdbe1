"""Garbage collection of store objects: mark what is needed, sweep the rest (SPEC §8).

Mark: every tree node and blob/chunk reachable from live versions, from versions soft-deleted
less than the grace period ago (a draft on some node may still be based on one), and from the
parts of distributed drafts.  Sweep: delete unmarked objects older than ``T0 - grace`` (T0: the
run's start, store time).  Shared subtrees are walked once, so the work follows the number of
distinct nodes, however often a hostile tree repeats them.

What is subtle:

* Writers on other nodes: the run agrees with them through the store (gcsync.py): it waits
  for the writers in flight when it started or when its mark ended, then marks again what
  was published since its mark read the catalog (always: a writer may have come and gone
  between the two listings of leases, unseen by both), and sweeps one object prefix at a
  time, saying which so late writers can check their objects.  No interleaving publishes a
  version whose objects were taken.
* Damage is not turned into loss: a tree node or record that must be kept but can not be read
  (missing, corrupt, malformed) means the mark is incomplete, so the run deletes nothing and
  fails (:class:`GcFailed`) naming what it could not read.
* Temp files and unfinished uploads of writers that died (:meth:`Store.leftovers`) are
  reported and removed once older than :data:`LEFTOVER_AGE`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import gcsync, model
from .catalog import VersionRecord, parse_iso
from .errors import ArtifactfsError, IntegrityError, NotFound
from .repo import Repo

DEFAULT_GRACE_SECONDS = 24 * 3600.0
SAFE_GRACE_SECONDS = 3600.0  # below this, drafts based on just-deleted versions are at risk
WAIT_SECONDS = 3600.0  # how long a run waits for writers in flight
LEFTOVER_AGE = 900.0  # temp files and uploads untouched this long belong to dead writers
PREFIXES = "0123456789abcdef"  # the sweep lists objects/sha256/0…, 1…, …
PAGE_OBJECTS = 10000  # a new sweep page (see gcsync.py) once this many objects were listed


@dataclass
class GcReport:
    objects: int = 0
    reachable: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    kept_young: int = 0
    leftovers: int = 0
    leftover_bytes: int = 0
    waited_for: int = 0  # writers in flight the run waited for
    stale_leases: int = 0  # leases of dead writers removed
    problems: list[str] = field(default_factory=list)


class GcFailed(ArtifactfsError):
    """The mark could not read everything that must be kept: nothing was deleted."""

    def __init__(self, report: GcReport) -> None:
        shown = "; ".join(report.problems[:3])
        more = f" (and {len(report.problems) - 3} more)" if len(report.problems) > 3 else ""
        super().__init__(f"gc deleted nothing: {len(report.problems)} thing(s) it must keep "
                         f"could not be read: {shown}{more}")
        self.report = report


class _Mark:
    """The marked object ids, and the versions and parts already walked."""

    def __init__(self, repo: Repo, report: GcReport) -> None:
        self.repo, self.report = repo, report
        self.marked: set[str] = {model.EMPTY_NODE.oid}
        self.versions: set[tuple[str, str, int]] = set()

    def problem(self, what: str) -> None:
        self.report.problems.append(what)

    def tree(self, oid: str, label: str) -> None:
        cat = self.repo.catalog
        stack = [oid]
        while stack:
            cur = stack.pop()
            if cur in self.marked:
                continue
            try:
                parts = cat.load_index(cur)
                entries = cat.load_node(cur)
            except IntegrityError as exc:
                self.problem(f"{label}: {exc}")
                continue
            self.marked.add(cur)
            self.marked.update(p.oid for p in parts or ())
            for entry in entries.values():
                if entry.kind == "dir":
                    stack.append(entry.oid)
                elif entry.kind == "file":
                    self.marked.update(d for d, _, _ in entry.chunk_spans())

    def versions_of(self, project: str, name: str, keep: Callable[[VersionRecord], bool]) -> None:
        cat = self.repo.catalog
        try:
            numbers = cat.version_numbers(project, name)
        except ArtifactfsError as exc:
            self.problem(f"{project}/{name}: could not list versions: {exc}")
            return
        for n in numbers:
            if (project, name, n) in self.versions:
                continue
            try:
                rec = cat.get_version(project, name, n)[0]
            except NotFound:
                continue
            except IntegrityError as exc:
                self.problem(str(exc))
                continue
            self.versions.add((project, name, n))
            if keep(rec):
                self.tree(rec.root, rec.label)

    def parts(self) -> None:
        store = self.repo.store
        for item in store.list("drafts/"):
            if "/parts/" not in item.key:
                continue
            try:
                doc = json.loads(store.get(item.key))
            except NotFound:
                continue
            except ValueError:
                self.problem(f"malformed draft part {item.key}")
                continue
            entries = doc.get("entries") if isinstance(doc, dict) else None
            if not isinstance(entries, dict):
                self.problem(f"malformed draft part {item.key}")
                continue
            for d in entries.values():
                if not isinstance(d, dict):
                    self.problem(f"malformed draft part {item.key}")
                    break
                if d.get("k") == "f":
                    self.marked.update(x for x in (d.get("c") or [d.get("d")])
                                       if model.is_digest(x))
                elif d.get("k") == "d" and model.is_digest(d.get("o")):
                    self.tree(str(d["o"]), item.key)

    def everything(self, grace: float, now: datetime) -> None:
        cat = self.repo.catalog
        for project in cat.projects():
            default_ttl = cat.project_ttl(project)

            def keep(rec: VersionRecord, ttl: float | None = default_ttl) -> bool:
                if rec.is_live(ttl, now):
                    return True
                try:
                    gone = parse_iso(rec.deleted_at) if rec.deleted_at else rec.expires_at(ttl)
                except ValueError:
                    return True  # can not tell when: keep
                return gone is None or (now - gone).total_seconds() <= grace

            for name in cat.collections(project):
                self.versions_of(project, name, keep)
        self.parts()


def collect(repo: Repo, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False,
            wait_seconds: float = WAIT_SECONDS,
            waiting: Callable[[list[gcsync.Lease]], None] | None = None) -> GcReport:
    """One gc run; raises :class:`GcFailed` (deleting nothing) when the mark is incomplete,
    :class:`gcsync.GcRace` when writers in flight did not finish within ``wait_seconds``."""
    report = GcReport()
    run = gcsync.GcRun(repo.store, grace_seconds)
    try:
        mark = _Mark(repo, report)
        first = run.leases()
        now = datetime.now(UTC)  # deletion times and TTLs are in the deleting node's clock
        mark.everything(grace_seconds, now)
        if report.problems:
            raise GcFailed(report)
        leases = {le.id: le for le in (*first, *run.last_leases())}
        report.stale_leases = len(run.stale)
        report.waited_for = len(leases)
        if leases:
            run.wait_for_writers(leases.values(), wait_seconds, waiting)
        # what was published since the mark read the catalog, even with no lease listed: a
        # writer may have begun after the first listing and ended before the second
        mark.everything(grace_seconds, now)
        if report.problems:
            raise GcFailed(report)
        report.reachable = len(mark.marked)
        _sweep(repo, run, mark.marked, run.t0 - grace_seconds, dry_run, report)
        _leftovers(repo, run.t0 - LEFTOVER_AGE, dry_run, report)
    finally:
        run.close()
    return report


def _sweep(repo: Repo, run: gcsync.GcRun, marked: set[str], cutoff: float, dry_run: bool,
           report: GcReport) -> None:
    """Delete unmarked objects older than ``cutoff``, one prefix at a time (see gcsync.py)."""
    store = repo.store
    listed = PAGE_OBJECTS
    for pp in PREFIXES:
        if listed >= PAGE_OBJECTS:  # a small store is one page: waiting writers wait less
            run.page()
            listed = 0
        for item in store.list(f"objects/sha256/{pp}"):
            listed += 1
            report.objects += 1
            digest = item.key[len("objects/sha256/"):].replace("/", "")
            if digest in marked:
                continue
            if item.mtime >= cutoff:
                report.kept_young += 1
                continue
            report.deleted += 1
            report.bytes_freed += item.size
            if not dry_run:
                run.check()
                store.delete(item.key)


def _leftovers(repo: Repo, before: float, dry_run: bool, report: GcReport) -> None:
    for lo in repo.store.leftovers(before):
        report.leftovers += 1
        report.leftover_bytes += lo.size
        if not dry_run:
            repo.store.remove_leftover(lo)

