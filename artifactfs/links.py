"""The registry: linked collections (W&B's model registry) in the reserved project ``registry``.

A *link* is a version of ``registry/COLLECTION`` whose record points at its source version's
tree (same root, digest, size) and names the source in ``source``.  Nothing is copied: the
mount serves ``MOUNT/registry/COLLECTION/vN`` like any version (same objects, same content
cache), and ``get``, ``ls``, ``diff`` and the API read it unchanged.  A marker
``artifacts/P/N/linked_to/%010d/registry~C~V`` lets a source find its links.

What is subtle:

* Linking a source already linked in that collection returns the existing link (and moves the
  aliases to it); linking a link links its source.  Content equal to the collection's latest
  link is not linked again (as for any version: the same digest makes no new version).
* The marker is written just before the link's record (the catalog's ``before_create``), and
  every reader re-checks the record's ``source``, so a lost race leaves only a stale marker.
* A link keeps its content alive when the source is deleted (gc keeps every live version's
  objects); ``unlink`` soft-deletes the link with its aliases.  Linking holds a write lease
  (gcsync.py): the source is live when it starts, so a concurrent gc keeps its tree.
* A registry collection has the type of its first link; linking another type is refused.
* Only linking writes to project ``registry``: put, commit and drafts refuse it
  (``names.check_writable_project``).
"""

from __future__ import annotations

import re

from . import model
from .catalog import VersionRecord
from .errors import IntegrityError, NotFound, UsageError
from .names import NAME_RE, REGISTRY, check_alias, check_name, parse_ref
from .repo import Repo

_WANDB_REGISTRY = re.compile(r"(wandb-registry-[A-Za-z0-9._-]+|model-registry|registry)")


def parse_target(target_path: str) -> str:
    """The registry collection a wandb-style target path names: ``COLLECTION``,
    ``registry/C``, ``model-registry/C``, ``wandb-registry-NAME/C``, each optionally after an
    ``entity/`` (one store is one team's, so the entity is not used)."""
    parts = target_path.split("/") if isinstance(target_path, str) else []
    if len(parts) == 3:
        check_name(parts[0], "entity")
        parts = parts[1:]
    if len(parts) == 2 and _WANDB_REGISTRY.fullmatch(parts[0]):
        parts = parts[1:]
    if len(parts) != 1 or not NAME_RE.fullmatch(parts[0]):
        raise UsageError(f"invalid registry target {target_path!r}: use COLLECTION or "
                         f"{REGISTRY}/COLLECTION (also model-registry/C, wandb-registry-X/C)")
    return parts[0]


def _marker_prefix(rec: VersionRecord) -> str:
    return f"artifacts/{rec.project}/{rec.name}/linked_to/{rec.version:010d}/"


def source_of(repo: Repo, rec: VersionRecord) -> VersionRecord | None:
    """The version a link points at (``None`` if ``rec`` is not a link); NotFound when the
    source was deleted."""
    if rec.source is None:
        return None
    return repo.catalog.resolve(parse_ref(rec.source))


def link(repo: Repo, rec: VersionRecord, collection: str,
         aliases: list[str] | tuple[str, ...] = ()) -> VersionRecord:
    """Link version ``rec`` into ``registry/collection``; returns the link's record."""
    check_name(collection, "registry collection")
    for a in aliases:
        check_alias(a)
    cat = repo.catalog
    src = source_of(repo, rec) or rec
    try:
        existing = [r for r in cat.versions(REGISTRY, collection) if r.source == src.label]
    except NotFound:
        existing = []
    if existing:
        r = existing[0]
        for a in aliases:
            if a != "latest":
                cat.set_alias(REGISTRY, collection, r.version, a)
        return cat.get_version(REGISTRY, collection, r.version)[0]

    def mark(n: int) -> None:
        repo.store.put_if_absent(f"{_marker_prefix(src)}{REGISTRY}~{collection}~{n}", b"{}")

    root = model.Node(b"", src.root, src.digest, src.size, src.file_count)
    with repo.writing(f"link {src.label} to {REGISTRY}/{collection}") as w:  # vs gc: gcsync.py
        out, _ = cat.commit_version(REGISTRY, collection, src.type, root,
                                    description=src.description, metadata=src.metadata,
                                    aliases=list(aliases), source=src.label,
                                    before_create=mark, session=w)
    return out


def links_of(repo: Repo, rec: VersionRecord) -> list[VersionRecord]:
    """The live registry versions that link to ``rec``."""
    cat = repo.catalog
    out = []
    prefix = _marker_prefix(rec)
    for item in repo.store.list(prefix):
        parts = item.key[len(prefix):].split("~")
        if len(parts) != 3 or parts[0] != REGISTRY or not parts[2].isdigit():
            continue
        try:
            r = cat.get_version(REGISTRY, parts[1], int(parts[2]))[0]
        except (NotFound, IntegrityError):
            continue
        if r.source == rec.label and r.is_live(cat.project_ttl(REGISTRY)):
            out.append(r)
    return out


def unlink(repo: Repo, rec: VersionRecord) -> None:
    """Remove a link (soft-delete it with its aliases); the source is untouched."""
    if rec.source is None:
        raise UsageError(f"{rec.label} is not a link: unlink() applies to versions of "
                         f"{REGISTRY}/… (delete() removes a version)")
    repo.catalog.delete_version(rec.project, rec.name, rec.version, delete_aliases=True)
    try:
        src = source_of(repo, rec)
    except NotFound:
        return
    if src is not None:
        repo.store.delete(f"{_marker_prefix(src)}{REGISTRY}~{rec.name}~{rec.version}")
