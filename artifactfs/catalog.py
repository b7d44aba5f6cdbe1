"""The catalog: collections, versions, aliases, TTLs and runs, as records in a store.

Protocol (the store is the only shared state; no coordinator):

* ``artifacts/P/N/collection.json`` — type and creation time, created put-if-absent; a name
  already used with another type is read back and refused.
* ``artifacts/P/N/versions/%010d.json`` — one immutable-content record per version, created
  put-if-absent.  Allocation reads the latest number, tries the next, and on a clash re-reads
  and tries again, so N concurrent writers get N distinct consecutive numbers.  Mutable fields
  (description, metadata, ttl, deleted_at) change by compare-and-swap.
* ``artifacts/P/N/aliases/A.json`` — ``{"version": N, "at": T, "prev": KEY}`` updated by CAS;
  one key per alias makes aliases unique within an artifact by construction.  ``latest`` is
  never stored: it is the highest live version.  ``prev`` links to the replaced record in
  ``artifacts/P/N/alias_history/A/`` (history.py); a removed alias is ``"version": null``.
* ``projects/P/settings.json`` — project defaults (TTL).
* ``runs/P/ID.json`` plus marker keys ``runs/P/ID/inputs/…`` and
  ``artifacts/P/N/used_by/%010d/…`` so that concurrent runs never contend on one record.

Write order is objects → trees → version record → aliases; readers go the other way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import history, lockfile, model
from .errors import (
    ArtifactfsError,
    IntegrityError,
    InvalidName,
    NotFound,
    PreconditionFailed,
    TypeConflict,
    UsageError,
)
from .names import NAME_RE, VERSION_RE, Ref, check_alias, check_name, check_project
from .nodes import Nodes, node_bytes, nodes_bytes
from .records import NO_TTL_TYPES, VersionRecord, alias_target, now_iso, parse_iso, ttl_allowed
from .runs import RunRecord, Runs, new_run_id

__all__ = ["NO_TTL_TYPES", "Catalog", "Collection", "RunRecord", "VersionRecord", "new_run_id",
           "node_bytes", "nodes_bytes", "now_iso", "parse_iso", "ttl_allowed"]
from .store.base import Store

if TYPE_CHECKING:
    from .gcsync import WriteSession

MAX_ATTEMPTS = 1000


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _loads(data: bytes, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"malformed record in store: {key}") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"malformed record in store: {key}")
    return doc


@dataclass(frozen=True)
class Collection:
    project: str
    name: str
    type: str
    created_at: str
    description: str = ""
    tags: tuple[str, ...] = ()
    deleted_at: str | None = None  # set when the whole artifact was deleted (discovery.py)


def _vkey(project: str, name: str, version: int) -> str:
    return f"artifacts/{project}/{name}/versions/{version:010d}.json"


def _akey(project: str, name: str, alias: str) -> str:
    return f"artifacts/{project}/{name}/aliases/{alias}.json"


def _ckey(project: str, name: str) -> str:
    return f"artifacts/{project}/{name}/collection.json"


class Catalog(Nodes, Runs):
    """Records of one store.  Thread-safe; every method does blocking store I/O."""

    def __init__(self, store: Store, node_cache_size: int = 256,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.on_change = on_change  # called with (project, name) after every change
        self.pins: lockfile.Lock | None = None  # a lock file's pinned aliases (lockfile.py)
        self._init_nodes(node_cache_size)

    # --- collections -----------------------------------------------------------------------
    def get_collection(self, project: str, name: str) -> Collection:
        key = _ckey(project, name)
        try:
            doc = _loads(self.store.get(key), key)
        except NotFound:
            raise NotFound(f"no artifact {project}/{name}") from None
        type_, created, desc = doc.get("type"), doc.get("created_at", ""), \
            doc.get("description", "")
        tags, deleted = doc.get("tags", []), doc.get("deleted_at")
        if not isinstance(type_, str) or not NAME_RE.fullmatch(type_) \
                or not isinstance(created, str) or not isinstance(desc, str) \
                or not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) \
                or not isinstance(deleted, str | None):
            raise IntegrityError(f"malformed record in store: {key}")
        return Collection(project=project, name=name, type=type_, created_at=created,
                          description=desc, tags=tuple(tags), deleted_at=deleted)

    def ensure_collection(self, project: str, name: str, type_: str) -> Collection:
        check_project(project)
        check_name(name, "artifact name")
        check_name(type_, "artifact type")
        key = _ckey(project, name)
        self.store.put_if_absent(key, _dumps({"type": type_, "created_at": now_iso()}))
        col = self.get_collection(project, name)
        if col.type != type_:
            raise TypeConflict(
                f"artifact {project}/{name} already exists with type {col.type!r}, not {type_!r}")
        return col

    def projects(self) -> list[str]:
        return [p for p in self.store.list_dirs("artifacts/")]

    def collections(self, project: str) -> list[str]:
        return self.store.list_dirs(f"artifacts/{project}/")

    def delete_collection(self, project: str, name: str, delete_aliases: bool = False) -> int:
        """Soft-delete every live version; returns how many were deleted."""
        self.get_collection(project, name)
        aliases = self.aliases(project, name)
        if aliases and not delete_aliases:
            raise UsageError(f"{project}/{name} has aliases {', '.join(sorted(aliases))}: "
                             "pass --delete-aliases to delete them too")
        n = 0
        for rec in self.versions(project, name):
            self.delete_version(project, name, rec.version, delete_aliases=True)
            n += 1
        return n

    # --- versions --------------------------------------------------------------------------
    def version_numbers(self, project: str, name: str) -> list[int]:
        prefix = f"artifacts/{project}/{name}/versions/"
        out = []
        for item in self.store.list(prefix):
            stem = item.key[len(prefix):]
            if stem.endswith(".json") and stem[:-5].isdigit() and len(stem) == 15:
                out.append(int(stem[:-5]))
        return sorted(out)

    def get_version(self, project: str, name: str, version: int) -> tuple[VersionRecord, str]:
        key = _vkey(project, name, version)
        try:
            data, etag = self.store.get_with_etag(key)
        except NotFound:
            raise NotFound(f"no version {project}/{name}:v{version}") from None
        rec = VersionRecord.from_json(_loads(data, key), key)
        if (rec.project, rec.name, rec.version) != (project, name, version):
            raise IntegrityError(f"version record does not match its key: {key}")
        return rec, etag

    def project_ttl(self, project: str) -> float | None:
        key = f"projects/{project}/settings.json"
        try:
            doc = _loads(self.store.get(key), key)
        except NotFound:
            return None
        v = doc.get("ttl_days")
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v <= 0):
            raise IntegrityError(f"malformed record in store: {key}: field 'ttl_days' must be "
                                 "a positive number of days")
        return None if v is None else float(v)

    def versions(self, project: str, name: str, include_dead: bool = False,
                 numbers: Iterable[int] | None = None,
                 damaged: dict[int, str] | None = None) -> list[VersionRecord]:
        """Version records in number order: live ones only, unless ``include_dead``.  A record
        that can not be read raises, unless ``damaged`` is given: then it is skipped and put
        there (number -> what is wrong), so one bad record costs only itself."""
        default_ttl = self.project_ttl(project)
        nums = self.version_numbers(project, name) if numbers is None else numbers
        out = []
        for n in nums:
            try:
                rec = self.get_version(project, name, n)[0]
            except NotFound:
                continue
            except IntegrityError as e:
                if damaged is None:
                    raise
                damaged[n] = str(e)
                continue
            if include_dead or rec.is_live(default_ttl):
                out.append(rec)
        return out

    def latest(self, project: str, name: str,
               numbers: list[int] | None = None) -> VersionRecord | None:
        """The highest live version (read from the top, so usually one record); pass the
        version ``numbers`` when they were just listed.  A damaged record above the highest
        live one makes ``latest`` unknown: IntegrityError, never an older version."""
        default_ttl = self.project_ttl(project)
        nums = self.version_numbers(project, name) if numbers is None else numbers
        for n in reversed(nums):
            try:
                rec = self.get_version(project, name, n)[0]
            except NotFound:
                continue
            except IntegrityError as e:
                raise IntegrityError(f"can not tell the latest version of {project}/{name}: "
                                     f"{e}") from None
            if rec.is_live(default_ttl):
                return rec
        return None

    def resolve(self, ref: Ref) -> VersionRecord:
        """The live version a ref names; NotFound with a clear message otherwise."""
        try:
            self.get_collection(ref.project, ref.name)
        except NotFound:
            raise NotFound(f"no artifact {ref.collection}") from None
        if ref.version is not None:
            rec = self.get_version(ref.project, ref.name, ref.version)[0]
            if not rec.is_live(self.project_ttl(ref.project)):
                raise NotFound(f"version {ref} was deleted")
            return rec
        if ref.at is not None:
            return self._resolve_at(ref, ref.at)
        pin = self.pins.pin(ref) if self.pins is not None else None
        if pin is not None:
            return self._pinned(pin)
        if ref.ref == "latest":
            rec2 = self.latest(ref.project, ref.name)
            if rec2 is None:
                raise NotFound(f"artifact {ref.collection} has no live version")
            return rec2
        damaged: dict[str, str] = {}
        aliases = self.aliases(ref.project, ref.name, damaged)
        if ref.ref in damaged:
            raise IntegrityError(damaged[ref.ref])
        if ref.ref not in aliases:
            raise NotFound(f"no alias {ref.ref!r} on {ref.collection}")
        return self.resolve(Ref(ref.project, ref.name, f"v{aliases[ref.ref]}"))

    def _pinned(self, pin: lockfile.Pin) -> VersionRecord:
        """The version a lock file pins an alias to, if it is still what was pinned."""
        assert self.pins is not None
        try:
            rec: VersionRecord | None = self.get_version(pin.project, pin.name, pin.version)[0]
        except NotFound:
            rec = None
        if rec is not None and not rec.is_live(self.project_ttl(pin.project)):
            rec = None
        return self.pins.check(pin, rec)

    def _resolve_at(self, ref: Ref, at: datetime) -> VersionRecord:
        """A dated ref: the version ``latest`` or the alias pointed at, at ``at``."""
        label = f"{ref.alias!r} on {ref.collection} at {at.isoformat()}"
        if ref.alias == "latest":
            v = history.latest_at(self.versions(ref.project, ref.name, include_dead=True), at,
                                  self.project_ttl(ref.project))
        else:
            prefix = history.history_prefix(ref.project, ref.name, ref.alias)
            try:
                current = _loads(self.store.get(_akey(ref.project, ref.name, ref.alias)),
                                 f"alias {ref.alias}")
            except NotFound:
                raise NotFound(f"no alias {ref.alias!r} on {ref.collection}") from None
            v = history.alias_at(self.store.get, prefix, current, at,
                                 f"{ref.alias!r} on {ref.collection}")
        if v is None:
            raise NotFound(f"no version was {label}")
        rec = self.get_version(ref.project, ref.name, v)[0]
        if not rec.is_live(self.project_ttl(ref.project)):
            raise NotFound(f"{rec.label}, which was {label}, has been deleted since")
        return rec

    def commit_version(
        self, project: str, name: str, type_: str, root: model.Node, *,
        description: str = "", metadata: Mapping[str, Any] | None = None,
        aliases: Iterable[str] = (), run: str | None = None, base: int | None = None,
        ttl_days: float | None = None, source: str | None = None,
        before_create: Callable[[int], None] | None = None,
        session: WriteSession | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Create the next version for tree ``root`` (already saved with its objects, through
        ``session``, whose checks run right before the record is written: see gcsync.py).

        Returns ``(record, created)``; ``created`` is False when the latest live version has
        the same digest, in which case that one is returned (and gets the aliases).
        """
        aliases = [check_alias(a) for a in aliases]
        if "latest" in aliases:
            aliases.remove("latest")
        if ttl_days is not None and not ttl_allowed(type_):
            raise UsageError(f"artifacts of type {type_!r} can not have a TTL")
        self.ensure_collection(project, name, type_)
        self.store.sync()
        for _ in range(MAX_ATTEMPTS):
            nums = self.version_numbers(project, name)
            try:
                latest = self.latest(project, name, nums)
            except IntegrityError:  # a damaged record on top: no "unchanged" shortcut
                latest = None
            if latest is not None and latest.digest == root.digest:
                self._apply_aliases(project, name, latest.version, aliases)
                if aliases:
                    self._changed(project, name)
                return latest, False
            n = nums[-1] + 1 if nums else 0
            rec = VersionRecord(
                project=project, name=name, version=n, type=type_, root=root.oid,
                digest=root.digest, size=root.size, file_count=root.count,
                created_at=now_iso(), description=description,
                metadata=dict(metadata or {}), run=run, base=base, ttl_days=ttl_days,
                source=source)
            if before_create is not None:
                before_create(n)
            if session is not None:
                session.before_record()
            if self.store.put_if_absent(_vkey(project, name, n), _dumps(rec.to_json())):
                self._apply_aliases(project, name, n, aliases)
                if run is not None:
                    self._mark_output(run, rec)
                self._changed(project, name)
                return rec, True
        raise ArtifactfsError(f"could not allocate a version of {project}/{name}: too much contention")

    def update_version(self, project: str, name: str, version: int,
                       change: Callable[[VersionRecord], VersionRecord]) -> VersionRecord:
        """Compare-and-swap loop over one version record's mutable fields."""
        key = _vkey(project, name, version)
        for _ in range(MAX_ATTEMPTS):
            rec, etag = self.get_version(project, name, version)
            new = change(rec)
            if new == rec:
                return rec
            new = replace(new, updated_at=now_iso())
            immutable = ("project", "name", "version", "type", "root", "digest", "size",
                         "file_count", "created_at", "run", "base", "source")  # updated_at is set here
            if any(getattr(new, f) != getattr(rec, f) for f in immutable):
                raise UsageError("only description, metadata, tags, ttl and deletion may change")
            try:
                self.store.cas(key, _dumps(new.to_json()), etag)
            except PreconditionFailed:
                continue
            self._changed(project, name)
            return new
        raise ArtifactfsError(f"could not update {project}/{name}:v{version}: too much contention")

    def delete_version(self, project: str, name: str, version: int,
                       delete_aliases: bool = False) -> VersionRecord:
        held = [a for a, v in self.aliases(project, name).items() if v == version]
        if held and not delete_aliases:
            raise UsageError(f"{project}/{name}:v{version} holds aliases {', '.join(sorted(held))}:"
                             " pass --delete-aliases to delete them too")
        for a in held:
            self._set_alias_doc(project, name, a, None)
        return self.update_version(project, name, version,
                                   lambda r: r if r.deleted_at else replace(r, deleted_at=now_iso()))

    def set_ttl(self, project: str, name: str, version: int, days: float | None) -> VersionRecord:
        if days is not None and days <= 0:
            raise UsageError(f"invalid TTL {days!r}: must be a positive number of days")
        rec = self.get_version(project, name, version)[0]
        if days is not None and not ttl_allowed(rec.type):
            raise UsageError(f"artifacts of type {rec.type!r} can not have a TTL")
        return self.update_version(project, name, version, lambda r: replace(r, ttl_days=days))

    def set_project_ttl(self, project: str, days: float | None) -> None:
        check_project(project)
        if days is not None and days <= 0:
            raise UsageError(f"invalid TTL {days!r}: must be a positive number of days")
        key = f"projects/{project}/settings.json"
        for _ in range(MAX_ATTEMPTS):
            try:
                data, etag = self.store.get_with_etag(key)
                doc: dict[str, Any] = _loads(data, key)
            except NotFound:
                doc, etag = {}, None  # type: ignore[assignment]
            doc["ttl_days"] = days
            try:
                self.store.cas(key, _dumps(doc), etag)
                return
            except PreconditionFailed:
                continue

    # --- aliases ---------------------------------------------------------------------------
    def aliases(self, project: str, name: str,
                damaged: dict[str, str] | None = None) -> dict[str, int]:
        """Custom aliases of an artifact: alias -> version number (``latest`` not included).
        A damaged alias record is left out (and put in ``damaged``: alias -> what is wrong);
        the others are read on."""
        prefix = f"artifacts/{project}/{name}/aliases/"
        out: dict[str, int] = {}
        for item in self.store.list(prefix):
            alias = item.key[len(prefix):].removesuffix(".json")
            if not item.key.endswith(".json") or not NAME_RE.fullmatch(alias) \
                    or VERSION_RE.fullmatch(alias) or alias == "latest":
                continue
            try:
                v = alias_target(_loads(self.store.get(item.key), item.key), item.key)
            except NotFound:
                continue
            except IntegrityError as e:
                if damaged is not None:
                    damaged[alias] = str(e)
                continue
            if v is not None:
                out[alias] = v
        return out

    def aliases_of(self, rec: VersionRecord, latest: int | None = None) -> list[str]:
        names = sorted(a for a, v in self.aliases(rec.project, rec.name).items() if v == rec.version)
        if latest is None:
            try:
                lt = self.latest(rec.project, rec.name)
            except IntegrityError:
                lt = None
            latest = lt.version if lt else None
        return (["latest"] if latest == rec.version else []) + names

    def set_alias(self, project: str, name: str, version: int, alias: str) -> None:
        check_alias(alias)
        if alias == "latest":
            raise InvalidName("alias 'latest' is maintained automatically")
        rec = self.get_version(project, name, version)[0]
        if not rec.is_live(self.project_ttl(project)):
            raise NotFound(f"version {rec.label} was deleted")
        self._apply_aliases(project, name, version, [alias])
        self._changed(project, name)

    def _changed(self, project: str, name: str) -> None:
        if self.on_change is not None:
            self.on_change(project, name)

    def _apply_aliases(self, project: str, name: str, version: int, aliases: Iterable[str]) -> None:
        for alias in aliases:
            self._set_alias_doc(project, name, alias, version)

    def _set_alias_doc(self, project: str, name: str, alias: str, version: int | None) -> bool:
        """CAS the alias to ``version`` (None: removed), its old state kept as history; False
        when it already was there."""
        key = _akey(project, name, alias)
        prefix = history.history_prefix(project, name, alias)
        for _ in range(MAX_ATTEMPTS):
            prev: dict[str, Any] | None
            try:
                data, etag = self.store.get_with_etag(key)
                prev = _loads(data, key)
            except NotFound:
                prev, etag = None, None
            if (prev.get("version") if prev is not None else None) == version:
                return False
            doc = history.next_doc(self.store.put_if_absent, prefix, prev, version, now_iso())
            try:
                self.store.cas(key, _dumps(doc), etag)
                return True
            except PreconditionFailed:
                continue
        raise ArtifactfsError(f"could not update alias {alias!r} of {project}/{name}: "
                              "too much contention")

    def remove_alias(self, project: str, name: str, alias: str) -> None:
        check_alias(alias)
        if alias == "latest":
            raise InvalidName("alias 'latest' is maintained automatically and can not be removed")
        if not self._set_alias_doc(project, name, alias, None):
            raise NotFound(f"no alias {alias!r} on {project}/{name}")
        self._changed(project, name)
