"""Garbage collection of store objects: mark what is needed, sweep the rest (SPEC §8).

Mark: every tree node and blob/chunk reachable from live versions, from versions soft-deleted
less than the grace period ago (a draft on some node may still be based on one), and from the
parts of distributed drafts that are not finished.  Sweep: delete unmarked objects, but only
those older than the grace period, so the objects of a commit in flight on another node (which
are written before its version record) are never taken.  Shared subtrees are walked once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import model
from .catalog import parse_iso
from .errors import IntegrityError, NotFound
from .repo import Repo

DEFAULT_GRACE_SECONDS = 24 * 3600.0


@dataclass
class GcReport:
    objects: int = 0
    reachable: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    kept_young: int = 0
    problems: list[str] = field(default_factory=list)


def _mark_tree(repo: Repo, oid: str, marked: set[str], report: GcReport) -> None:
    stack = [oid]
    while stack:
        cur = stack.pop()
        if cur in marked:
            continue
        marked.add(cur)
        try:
            marked.update(p.oid for p in repo.catalog.load_index(cur) or ())
            entries = repo.catalog.load_node(cur)
        except IntegrityError as exc:
            report.problems.append(str(exc))
            continue
        for entry in entries.values():
            if entry.kind == "dir":
                stack.append(entry.oid)
            elif entry.kind == "file":
                marked.update(entry.chunks or ([entry.digest] if entry.size else []))


def _mark_parts(repo: Repo, marked: set[str]) -> None:
    for item in repo.store.list("drafts/"):
        if "/parts/" not in item.key:
            continue
        try:
            doc = json.loads(repo.store.get(item.key))
        except (NotFound, ValueError):
            continue
        for d in doc.get("entries", {}).values():
            if isinstance(d, dict) and d.get("k") == "f":
                marked.update(d.get("c") or [d.get("d")])


def collect(repo: Repo, grace_seconds: float = DEFAULT_GRACE_SECONDS,
            dry_run: bool = False) -> GcReport:
    report = GcReport()
    marked: set[str] = set()
    now = datetime.now(UTC)
    cat = repo.catalog
    for project in cat.projects():
        default_ttl = cat.project_ttl(project)
        for name in cat.collections(project):
            for rec in cat.versions(project, name, include_dead=True):
                if not rec.is_live(default_ttl, now):
                    gone = parse_iso(rec.deleted_at) if rec.deleted_at else rec.expires_at(
                        default_ttl)
                    if gone is not None and (now - gone).total_seconds() > grace_seconds:
                        continue
                _mark_tree(repo, rec.root, marked, report)
    _mark_parts(repo, marked)
    marked.add(model.EMPTY_NODE.oid)
    report.reachable = len(marked)
    cutoff = time.time() - grace_seconds
    for item in repo.store.list("objects/sha256/"):
        report.objects += 1
        digest = item.key[len("objects/sha256/"):].replace("/", "")
        if digest in marked:
            continue
        if item.mtime > cutoff:
            report.kept_young += 1
            continue
        report.deleted += 1
        report.bytes_freed += item.size
        if not dry_run:
            repo.store.delete(item.key)
    return report
