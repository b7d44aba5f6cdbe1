"""Distributed drafts: many writers on many nodes add files to one draft id; one finishes it.

Keys (the store is the only shared state)::

    drafts/P/N/ID/parts/WRITER.json   one writer's entries {path: entry}, written whole
    drafts/P/N/ID/finished.json       created put-if-absent by the finisher

Protocol, which never loses an upsert silently:

* upsert: refuse if ``finished.json`` exists; write the part; look again.  No marker → the
  finisher (who lists parts only after creating its marker) will see this part.  A marker →
  wait until the finisher has recorded which parts it took, and succeed only if this part was
  one of them.
* finish: create the marker (put-if-absent: one finisher wins), list and merge the parts with
  the finisher's own entries; different content at one path is a :class:`Conflict` naming the
  paths and their writers (the marker is removed so the writers can fix and retry); else commit
  the version and record the parts it took and the version in the marker.

A writer is one user of one mount on one node (``HOST-MOUNTID-uUID``, made by the daemon from
the caller's credentials, SPEC §9): two users of one mount upserting into one id are two
writers with two parts, so one can never replace the other's files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from . import model
from .catalog import VersionRecord, now_iso
from .errors import AlreadyExists, Conflict, IntegrityError, NotFound, StoreUnavailable
from .gcsync import WriteSession
from .names import check_name, check_writable_project
from .repo import Repo

WAIT_SECONDS = 60.0


def _prefix(project: str, name: str, draft_id: str) -> str:
    check_writable_project(project)
    check_name(name, "artifact name")
    check_name(draft_id, "draft id")
    return f"drafts/{project}/{name}/{draft_id}/"


def _entry_to_json(e: model.Entry) -> Any:
    return json.loads(model.encode_node({"x": e}).data)["e"][0][1]


def _entry_from_json(doc: Any) -> model.Entry:
    data = json.dumps({"v": 1, "e": [["x", doc]]}).encode()
    return model.decode_node(data)["x"]


def _marker(repo: Repo, prefix: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(repo.store.get(prefix + "finished.json"))
    except NotFound:
        return None
    return doc if isinstance(doc, dict) else {}


def upsert(repo: Repo, project: str, name: str, draft_id: str,
           entries: Mapping[str, model.Entry | None], writer: str,
           session: WriteSession | None = None) -> int:
    """Add this writer's entries (already ingested, through ``session``) to the shared draft;
    returns their count."""
    prefix = _prefix(project, name, draft_id)
    check_name(writer, "writer id")
    if _marker(repo, prefix) is not None:
        raise AlreadyExists(f"distributed draft {project}/{name}/{draft_id} was already finished")
    part = f"{writer}.json"
    try:  # a writer's upserts accumulate
        known = json.loads(repo.store.get(prefix + "parts/" + part)).get("entries", {})
    except (NotFound, ValueError, AttributeError):
        known = {}
    known.update({p: _entry_to_json(e) for p, e in entries.items() if e is not None})
    doc = {"writer": writer, "created_at": now_iso(), "entries": known}
    repo.store.sync()
    if session is not None:
        session.before_record()
    repo.store.put(prefix + "parts/" + part, json.dumps(doc, sort_keys=True).encode())
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        marker = _marker(repo, prefix)
        if marker is None:
            return len(doc["entries"])
        taken = marker.get("parts")
        if isinstance(taken, list):
            if part in taken:
                return len(doc["entries"])
            raise AlreadyExists(
                f"distributed draft {project}/{name}/{draft_id} was finished without this upsert")
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"distributed draft {draft_id}: finisher did not complete")
        time.sleep(0.2)


def finish(repo: Repo, project: str, name: str, draft_id: str, type_: str,
           own: Mapping[str, model.Entry | None], writer: str,
           base: VersionRecord | None = None, **commit_kw: Any) -> tuple[VersionRecord, bool]:
    """Merge every upserted part with ``own`` changes and commit them as the next version.

    ``own`` may remove paths (``None``); parts only add or replace.  The result is ``base``
    (when given) with all of it applied.
    """
    prefix = _prefix(project, name, draft_id)
    repo.check_type(project, name, type_)
    repo.store.sync()
    if not repo.store.put_if_absent(prefix + "finished.json",
                                    json.dumps({"writer": writer, "at": now_iso()}).encode()):
        marker = _marker(repo, prefix) or {}
        if marker.get("writer") != writer or "parts" in marker:
            raise AlreadyExists(
                f"distributed draft {project}/{name}/{draft_id} was already finished")
        # our own finish died half way (no parts recorded): take it up again
    try:
        merged: dict[str, model.Entry] = {p: e for p, e in own.items() if e is not None}
        by = dict.fromkeys(merged, writer)  # path -> the writer whose entry is in merged
        removed = {p for p, e in own.items() if e is None}
        conflicts: dict[str, set[str]] = {}
        parts: list[str] = []
        for item in repo.store.list(prefix + "parts/"):
            part = item.key[len(prefix + "parts/"):]
            try:
                doc = json.loads(repo.store.get(item.key))
                entries = {p: _entry_from_json(d) for p, d in doc["entries"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise IntegrityError(f"malformed draft part {item.key}: {exc}") from None
            parts.append(part)
            who = part.removesuffix(".json")
            for p, e in entries.items():
                if p in merged and model.encode_node({"x": merged[p]}).digest != \
                        model.encode_node({"x": e}).digest:
                    conflicts.setdefault(p, {by[p]}).add(who)
                merged.setdefault(p, e)
                by.setdefault(p, who)
        if conflicts:
            raise Conflict(_conflict_message(conflicts))
        changes: dict[str, model.Entry | None] = dict.fromkeys(removed)
        changes.update(merged)
        rec, created = repo.commit_entries(project, name, type_, changes, base=base, **commit_kw)
    except BaseException:
        repo.store.delete(prefix + "finished.json")
        raise
    repo.store.put(prefix + "finished.json", json.dumps(
        {"writer": writer, "parts": parts, "version": rec.version}).encode())
    cleanup(repo, project, name, draft_id)
    return rec, created


def _conflict_message(conflicts: Mapping[str, set[str]]) -> str:
    shown = [f"{p} (from {' and '.join(sorted(conflicts[p]))})" for p in sorted(conflicts)[:20]]
    more = f" (and {len(conflicts) - 20} more)" if len(conflicts) > 20 else ""
    return f"writers gave different content for: {', '.join(shown)}{more}"


def cleanup(repo: Repo, project: str, name: str, draft_id: str) -> None:
    """Remove the parts of a finished draft (the marker stays, so late upserts still fail)."""
    prefix = _prefix(project, name, draft_id)
    for item in list(repo.store.list(prefix + "parts/")):
        repo.store.delete(item.key)
