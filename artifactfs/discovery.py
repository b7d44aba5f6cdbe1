"""What is in a store, and the edits of whole collections: projects, collections by type,
tags (and searching by tag), renames, type changes, and deleting and re-creating a name.

Keys this module writes besides the catalog's records (see catalog.py)::

    artifacts/P/N/collection.json   + description, tags, deleted_at (compare-and-swap)
    tags/TAG/P~N                    marker: collection P/N carries TAG
    tags/TAG/P~N~V                  marker: version P/N:vV carries TAG

What is subtle:

* Markers only make a search cheap (it lists one prefix instead of reading every record):
  a marker is written before the record says so and removed after it stops saying so, and a
  search re-reads each record it finds, so a crash in between leaves a stale marker that
  searches skip, never a tagged record that a search misses.
* A deleted collection keeps its records (soft-deleted versions, for gc's grace) and gets
  ``deleted_at``; it is listed again once it has a live version, and ``revive`` lets a new
  artifact of another type take the name (the type changes only for a deleted collection,
  so two writers creating one name with two types still clash).
* A rename copies every record to the new name (rewriting the name they carry), re-points
  lineage markers, tags and registry links, then removes the old keys.  It is not atomic
  against writers of the old name: a commit to the old name that lands during the rename
  creates the old name again (nothing is lost; it shows under the old name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .catalog import MAX_ATTEMPTS, Collection, VersionRecord, _vkey, now_iso, ttl_allowed
from .errors import AlreadyExists, ArtifactfsError, IntegrityError, NotFound, PreconditionFailed
from .names import NAME_RE, check_name, check_project
from .repo import Repo

Doc = dict[str, Any]
_VERSION_KEY = re.compile(r"versions/([0-9]{10})\.json")


def _ckey(project: str, name: str) -> str:
    return f"artifacts/{project}/{name}/collection.json"


def _cas_json(repo: Repo, key: str, change: Callable[[Doc], Doc | None]) -> Doc:
    """Compare-and-swap loop over one JSON record; ``change`` returns None for "no change"."""
    for _ in range(MAX_ATTEMPTS):
        try:
            data, etag = repo.store.get_with_etag(key)
        except NotFound:
            raise NotFound(f"no record {key}") from None
        try:
            doc = json.loads(data)
        except ValueError:
            raise IntegrityError(f"malformed record in store: {key}") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"malformed record in store: {key}")
        new = change(dict(doc))
        if new is None or new == doc:
            return doc
        try:
            repo.store.cas(key, json.dumps(new, sort_keys=True, separators=(",", ":")).encode(),
                           etag)
        except PreconditionFailed:
            continue
        return new
    raise ArtifactfsError(f"could not update {key}: too much contention")


def check_tags(tags: Iterable[str]) -> list[str]:
    return sorted({check_name(t, "tag") for t in tags})


# --- listing ----------------------------------------------------------------------------------
def projects(repo: Repo) -> list[str]:
    return [p for p in repo.catalog.projects() if NAME_RE.fullmatch(p) and p != "drafts"]


def collections(repo: Repo, project: str, type_: str | None = None) -> list[Collection]:
    """The live collections of a project (optionally of one type), by name."""
    check_project(project)
    cat = repo.catalog
    out = []
    for name in cat.collections(project):
        if not NAME_RE.fullmatch(name):
            continue
        try:
            col = cat.get_collection(project, name)
            if col.deleted_at is not None and cat.latest(project, name) is None:
                continue
        except (NotFound, IntegrityError):
            continue
        if type_ is None or col.type == type_:
            out.append(col)
    return out


def types(repo: Repo, project: str) -> list[str]:
    return sorted({c.type for c in collections(repo, project)})


# --- collection edits -------------------------------------------------------------------------
def edit_collection(repo: Repo, project: str, name: str, *, description: str | None = None,
                    tags: Iterable[str] | None = None) -> Collection:
    """Set a collection's description and/or tags."""
    repo.catalog.get_collection(project, name)  # NotFound with a clear message
    new_tags = check_tags(tags) if tags is not None else None
    old = repo.catalog.get_collection(project, name)
    for t in set(new_tags or ()) - set(old.tags):
        repo.store.put_if_absent(f"tags/{t}/{project}~{name}", b"{}")

    def change(doc: Doc) -> Doc:
        if description is not None:
            doc["description"] = description
        if new_tags is not None:
            doc["tags"] = new_tags
        return doc

    _cas_json(repo, _ckey(project, name), change)
    for t in set(old.tags) - set(new_tags if new_tags is not None else old.tags):
        repo.store.delete(f"tags/{t}/{project}~{name}")
    repo.catalog._changed(project, name)
    return repo.catalog.get_collection(project, name)


def change_type(repo: Repo, project: str, name: str, type_: str) -> None:
    """Give a collection and all its versions another type."""
    check_name(type_, "artifact type")
    cat = repo.catalog
    col = cat.get_collection(project, name)
    if col.type == type_:
        return
    recs = cat.versions(project, name, include_dead=True)
    if not ttl_allowed(type_) and any(r.ttl_days is not None for r in recs):
        raise ArtifactfsError(f"artifacts of type {type_!r} can not have a TTL: clear the TTL "
                              f"of the versions of {project}/{name} first")
    _cas_json(repo, _ckey(project, name), lambda d: {**d, "type": type_})
    for r in recs:
        _cas_json(repo, _vkey(project, name, r.version), lambda d: {**d, "type": type_})
    cat._changed(project, name)


def delete_collection(repo: Repo, project: str, name: str, delete_aliases: bool) -> int:
    """Soft-delete every version and mark the collection deleted; returns how many."""
    n = repo.catalog.delete_collection(project, name, delete_aliases)
    _cas_json(repo, _ckey(project, name), lambda d: {**d, "deleted_at": now_iso()})
    return n


def revive(repo: Repo, project: str, name: str, type_: str) -> bool:
    """Let a new artifact of type ``type_`` take the name of a deleted collection; returns
    whether it did (False: the collection is not deleted, or still has a live version)."""
    cat = repo.catalog
    col = cat.get_collection(project, name)
    if col.deleted_at is None or cat.latest(project, name) is not None:
        return False

    def change(d: Doc) -> Doc | None:
        if d.get("deleted_at") is None:
            return None  # someone else revived it first: their type stands
        d.pop("deleted_at", None)
        return {**d, "type": type_, "created_at": now_iso(), "tags": [], "description": ""}

    _cas_json(repo, _ckey(project, name), change)
    return cat.get_collection(project, name).type == type_


# --- tags -------------------------------------------------------------------------------------
def set_version_tags(repo: Repo, rec: VersionRecord, tags: Iterable[str]) -> VersionRecord:
    new = check_tags(tags)
    old = set(rec.tags)
    base = f"{rec.project}~{rec.name}~{rec.version}"
    for t in set(new) - old:
        repo.store.put_if_absent(f"tags/{t}/{base}", b"{}")
    out = repo.catalog.update_version(rec.project, rec.name, rec.version,
                                      lambda r: _with_tags(r, new))
    for t in old - set(new):
        repo.store.delete(f"tags/{t}/{base}")
    return out


def _with_tags(r: VersionRecord, tags: list[str]) -> VersionRecord:
    from dataclasses import replace
    return replace(r, tags=list(tags))


@dataclass(frozen=True)
class Found:
    """What carries a tag: versions and collections."""

    versions: list[VersionRecord]
    collections: list[Collection]


def search(repo: Repo, tag: str, project: str | None = None) -> Found:
    """Live versions and collections carrying ``tag`` (in ``project``, or anywhere)."""
    check_name(tag, "tag")
    cat = repo.catalog
    versions: list[VersionRecord] = []
    cols: list[Collection] = []
    prefix = f"tags/{tag}/"
    for item in repo.store.list(prefix):
        parts = item.key[len(prefix):].split("~")
        if len(parts) not in (2, 3) or not all(NAME_RE.fullmatch(p) for p in parts[:2]):
            continue
        if project is not None and parts[0] != project:
            continue
        try:
            if len(parts) == 2:
                col = cat.get_collection(parts[0], parts[1])
                if tag in col.tags and col.deleted_at is None:
                    cols.append(col)
            elif parts[2].isdigit():
                rec = cat.get_version(parts[0], parts[1], int(parts[2]))[0]
                if tag in rec.tags and rec.is_live(cat.project_ttl(rec.project)):
                    versions.append(rec)
        except (NotFound, IntegrityError):
            continue
    return Found(versions, cols)


# --- rename -----------------------------------------------------------------------------------
def rename(repo: Repo, project: str, old: str, new: str) -> Collection:
    """Rename collection ``project/old`` to ``project/new`` (see the module docstring)."""
    check_name(new, "artifact name")
    cat, store = repo.catalog, repo.store
    col = cat.get_collection(project, old)
    if new == old:
        return col
    data = store.get(_ckey(project, old))
    if not store.put_if_absent(_ckey(project, new), data):
        raise AlreadyExists(f"artifact {project}/{new} already exists")
    src, dst = f"artifacts/{project}/{old}/", f"artifacts/{project}/{new}/"
    moved: list[str] = []
    for item in list(store.list(src)):
        rest = item.key[len(src):]
        if rest == "collection.json":
            continue
        body = store.get(item.key)
        m = _VERSION_KEY.fullmatch(rest)
        if m:
            _repoint(repo, project, new, cat.get_version(project, old, int(m.group(1)))[0])
            body = _renamed_record(body, new, item.key)
        store.put_if_absent(dst + rest, body)
        moved.append(item.key)
    for t in col.tags:
        store.put_if_absent(f"tags/{t}/{project}~{new}", b"{}")
        store.delete(f"tags/{t}/{project}~{old}")
    for key in moved:
        store.delete(key)
    store.delete(_ckey(project, old))
    cat._changed(project, old)
    cat._changed(project, new)
    return cat.get_collection(project, new)


def _renamed_record(body: bytes, new: str, key: str) -> bytes:
    try:
        doc = json.loads(body)
    except ValueError:
        raise IntegrityError(f"malformed record in store: {key}") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"malformed record in store: {key}")
    doc["name"] = new
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _repoint(repo: Repo, project: str, new: str, rec: VersionRecord) -> None:
    """Lineage markers, tag markers and registry links of version ``rec`` (still under its
    old name), moved to ``new``."""
    store = repo.store
    old, v = rec.name, rec.version
    for t in rec.tags:
        store.put_if_absent(f"tags/{t}/{project}~{new}~{v}", b"{}")
        store.delete(f"tags/{t}/{project}~{old}~{v}")
    runs = [rec.run] if rec.run else []
    runs += [f"{r.project}/{r.id}" for r in repo.catalog.used_by(rec)]
    for i, run in enumerate(runs):
        rp, _, rid = run.partition("/")
        kind = "outputs" if i == 0 and rec.run else "inputs"
        store.put_if_absent(f"runs/{rp}/{rid}/{kind}/{project}~{new}~{v}", b"{}")
        store.delete(f"runs/{rp}/{rid}/{kind}/{project}~{old}~{v}")
    from . import links
    for reg in links.links_of(repo, rec):
        _cas_json(repo, _vkey(reg.project, reg.name, reg.version),
                  lambda d: {**d, "source": f"{project}/{new}:v{v}"})
