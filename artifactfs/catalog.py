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
import secrets
import string
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
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
from .names import VERSION_RE, Ref, check_alias, check_name, check_project
from .store.base import Store

if TYPE_CHECKING:
    from .gcsync import WriteSession

NO_TTL_TYPES = ("run_table", "code", "job")
MAX_ATTEMPTS = 1000


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _loads(data: bytes, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise IntegrityError(f"malformed record in store: {key}") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"malformed record in store: {key}")
    return doc


def ttl_allowed(type_: str) -> bool:
    return type_ not in NO_TTL_TYPES and not type_.startswith("wandb-")


@dataclass(frozen=True)
class Collection:
    project: str
    name: str
    type: str
    created_at: str
    description: str = ""
    tags: tuple[str, ...] = ()
    deleted_at: str | None = None  # set when the whole artifact was deleted (discovery.py)


@dataclass(frozen=True)
class VersionRecord:
    project: str
    name: str
    version: int
    type: str
    root: str  # object id of the root tree node
    digest: str  # content digest (root node's)
    size: int
    file_count: int
    created_at: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    ttl_days: float | None = None
    deleted_at: str | None = None
    run: str | None = None  # "project/run_id" that logged it
    base: int | None = None  # version this one was drafted from
    tags: list[str] = field(default_factory=list)
    source: str | None = None  # registry links: "project/name:vN" this version links to
    updated_at: str | None = None  # last change of a mutable field

    @property
    def ref(self) -> Ref:
        return Ref(self.project, self.name, f"v{self.version}")

    @property
    def label(self) -> str:
        return f"{self.project}/{self.name}:v{self.version}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], key: str = "") -> VersionRecord:
        try:
            rec = cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
        except TypeError:
            raise IntegrityError(f"malformed version record: {key}") from None
        if not model.is_digest(rec.root) or not model.is_digest(rec.digest):
            raise IntegrityError(f"malformed version record: {key}")
        if not isinstance(rec.tags, list) or not all(isinstance(t, str) for t in rec.tags) \
                or not isinstance(rec.source, str | None):
            raise IntegrityError(f"malformed version record: {key}")
        return rec

    def expires_at(self, default_ttl_days: float | None) -> datetime | None:
        ttl = self.ttl_days if self.ttl_days is not None else default_ttl_days
        if ttl is None or not ttl_allowed(self.type):
            return None
        return parse_iso(self.created_at) + timedelta(days=ttl)

    def is_live(self, default_ttl_days: float | None = None, now: datetime | None = None) -> bool:
        if self.deleted_at is not None:
            return False
        exp = self.expires_at(default_ttl_days)
        return exp is None or exp > (now or datetime.now(UTC))


@dataclass(frozen=True)
class RunRecord:
    project: str
    id: str
    job_type: str = ""
    group: str = ""
    created_at: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""


def _vkey(project: str, name: str, version: int) -> str:
    return f"artifacts/{project}/{name}/versions/{version:010d}.json"


def _akey(project: str, name: str, alias: str) -> str:
    return f"artifacts/{project}/{name}/aliases/{alias}.json"


def _ckey(project: str, name: str) -> str:
    return f"artifacts/{project}/{name}/collection.json"


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def node_bytes(store: Store, oid: str) -> bytes:
    """The stored bytes of tree node ``oid`` (unverified: decoding verifies them)."""
    try:
        return store.get(model.object_key(oid))
    except NotFound:
        raise IntegrityError(f"tree node {oid} is missing from the store") from None


def nodes_bytes(store: Store, oids: Sequence[str], threads: int = 8) -> Iterator[bytes]:
    """The bytes of many nodes (a split directory's parts), in order, ``threads`` at a time:
    on S3 the round trips overlap instead of adding up."""
    if len(oids) <= 1:
        yield from (node_bytes(store, o) for o in oids)
        return
    with ThreadPoolExecutor(min(threads, len(oids)), thread_name_prefix="parts") as pool:
        window: deque[Future[bytes]] = deque()
        for oid in oids:
            window.append(pool.submit(node_bytes, store, oid))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


class Catalog:
    """Records of one store.  Thread-safe; every method does blocking store I/O."""

    def __init__(self, store: Store, node_cache_size: int = 256,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.on_change = on_change  # called with (project, name) after every change
        self.pins: lockfile.Lock | None = None  # a lock file's pinned aliases (lockfile.py)
        self._nodes: OrderedDict[str, dict[str, model.Entry]] = OrderedDict()
        self._nodes_max = node_cache_size
        self._indexes: dict[str, list[model.Part] | None] = {}  # oid -> parts (None: plain)
        self._lock = threading.Lock()

    # --- tree nodes ------------------------------------------------------------------------
    def save_node(self, node: model.Node) -> None:
        """Store a node (and the parts that came with it, first)."""
        for oid, data in model.node_objects(node):
            self.store.put_if_absent(model.object_key(oid), data)

    def _node_bytes(self, oid: str) -> bytes:
        return node_bytes(self.store, oid)

    def load_node(self, oid: str) -> dict[str, model.Entry]:
        """Entries of tree node ``oid`` (a split directory's parts joined), fetched once and
        verified against its id."""
        with self._lock:
            hit = self._nodes.get(oid)
            if hit is not None:
                self._nodes.move_to_end(oid)
                return hit
        data = self._node_bytes(oid)
        parts = model.decode_index(data, oid) if model.is_index(data) else None
        if parts is None:
            entries = model.decode_node(data, oid)
        else:
            oids = [p.oid for p in parts]
            got = dict(zip(oids, nodes_bytes(self.store, oids), strict=True))
            # a part is a plain node, never an index
            entries = model.merge_parts(parts, lambda o: model.decode_node(got[o], o))
        self._remember(oid, entries, parts)
        return entries

    def load_index(self, oid: str) -> list[model.Part] | None:
        """The parts of a split directory's node, ``None`` for a plain node."""
        with self._lock:
            if oid in self._indexes:
                return self._indexes[oid]
        data = self._node_bytes(oid)
        if not model.is_index(data):
            self._remember(oid, model.decode_node(data, oid), None)
            return None
        parts = model.decode_index(data, oid)
        self._remember(oid, None, parts)
        return parts

    def _remember(self, oid: str, entries: dict[str, model.Entry] | None,
                  parts: list[model.Part] | None) -> None:
        with self._lock:
            self._indexes[oid] = parts
            if len(self._indexes) > 64 * self._nodes_max:
                self._indexes.pop(next(iter(self._indexes)))
            if entries is not None:
                self._nodes[oid] = entries
                if len(self._nodes) > self._nodes_max:
                    self._nodes.popitem(last=False)

    # --- collections -----------------------------------------------------------------------
    def get_collection(self, project: str, name: str) -> Collection:
        key = _ckey(project, name)
        try:
            doc = _loads(self.store.get(key), key)
        except NotFound:
            raise NotFound(f"no artifact {project}/{name}") from None
        tags = doc.get("tags")
        deleted = doc.get("deleted_at")
        return Collection(project=project, name=name, type=str(doc.get("type", "")),
                          created_at=str(doc.get("created_at", "")),
                          description=str(doc.get("description", "")),
                          tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
                          deleted_at=deleted if isinstance(deleted, str) else None)

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
        try:
            doc = _loads(self.store.get(f"projects/{project}/settings.json"), project)
        except NotFound:
            return None
        v = doc.get("ttl_days")
        return float(v) if isinstance(v, int | float) else None

    def versions(self, project: str, name: str, include_dead: bool = False,
                 numbers: Iterable[int] | None = None) -> list[VersionRecord]:
        """Version records in number order: live ones only, unless ``include_dead``."""
        default_ttl = self.project_ttl(project)
        nums = self.version_numbers(project, name) if numbers is None else numbers
        out = []
        for n in nums:
            try:
                rec = self.get_version(project, name, n)[0]
            except NotFound:
                continue
            if include_dead or rec.is_live(default_ttl):
                out.append(rec)
        return out

    def latest(self, project: str, name: str,
               numbers: list[int] | None = None) -> VersionRecord | None:
        """The highest live version (read from the top, so usually one record); pass the
        version ``numbers`` when they were just listed."""
        default_ttl = self.project_ttl(project)
        nums = self.version_numbers(project, name) if numbers is None else numbers
        for n in reversed(nums):
            rec = self.get_version(project, name, n)[0]
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
        aliases = self.aliases(ref.project, ref.name)
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
            latest = self.latest(project, name, nums)
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
    def aliases(self, project: str, name: str) -> dict[str, int]:
        """Custom aliases of an artifact: alias -> version number (``latest`` not included)."""
        prefix = f"artifacts/{project}/{name}/aliases/"
        out: dict[str, int] = {}
        for item in self.store.list(prefix):
            alias = item.key[len(prefix):].removesuffix(".json")
            try:
                doc = _loads(self.store.get(item.key), item.key)
            except NotFound:
                continue
            v = doc.get("version")
            if isinstance(v, int) and not VERSION_RE.fullmatch(alias):
                out[alias] = v
        return out

    def aliases_of(self, rec: VersionRecord, latest: int | None = None) -> list[str]:
        names = sorted(a for a, v in self.aliases(rec.project, rec.name).items() if v == rec.version)
        if latest is None:
            lt = self.latest(rec.project, rec.name)
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

    # --- runs and lineage ------------------------------------------------------------------
    def create_run(self, project: str, job_type: str = "", group: str = "",
                   run_id: str | None = None, config: Mapping[str, Any] | None = None,
                   **extra: Any) -> RunRecord:
        """A new run, or the existing one with that id (``extra``: name, tags, notes)."""
        check_project(project)
        run_id = check_name(run_id, "run id") if run_id else new_run_id()
        rec = RunRecord(project=project, id=run_id, job_type=job_type, group=group,
                        created_at=now_iso(), config=dict(config or {}), **extra)
        self.store.put_if_absent(f"runs/{project}/{run_id}.json", _dumps(asdict(rec)))
        return self.get_run(project, run_id)

    def get_run(self, project: str, run_id: str) -> RunRecord:
        key = f"runs/{project}/{run_id}.json"
        try:
            doc = _loads(self.store.get(key), key)
        except NotFound:
            raise NotFound(f"no run {project}/{run_id}") from None
        return RunRecord(**{k: doc[k] for k in RunRecord.__dataclass_fields__ if k in doc})

    def find_run(self, run: str) -> RunRecord:
        """A run by ``project/id`` or by a bare id (searched in every project)."""
        if "/" in run:
            p, _, rid = run.partition("/")
            return self.get_run(p, rid)
        for p in self.store.list_dirs("runs/"):
            try:
                return self.get_run(p, run)
            except NotFound:
                continue
        raise NotFound(f"no run {run!r}")

    def mark_input(self, run: RunRecord, rec: VersionRecord) -> None:
        self.mark_use(run, rec.project, rec.name, rec.version)

    def mark_use(self, run: RunRecord, project: str, name: str, version: int) -> None:
        """``run`` used ``project/name:vVERSION`` (two markers; idempotent)."""
        tag = f"{project}~{name}~{version}"
        self.store.put_if_absent(f"runs/{run.project}/{run.id}/inputs/{tag}", b"{}")
        self.store.put_if_absent(
            f"artifacts/{project}/{name}/used_by/{version:010d}/{run.project}~{run.id}", b"{}")

    def _mark_output(self, run: str, rec: VersionRecord) -> None:
        p, _, rid = run.partition("/")
        tag = f"{rec.project}~{rec.name}~{rec.version}"
        self.store.put_if_absent(f"runs/{p}/{rid}/outputs/{tag}", b"{}")

    def run_artifacts(self, run: RunRecord, kind: str) -> list[Ref]:
        prefix = f"runs/{run.project}/{run.id}/{kind}/"
        out = []
        for item in self.store.list(prefix):
            p, n, v = item.key[len(prefix):].split("~")
            out.append(Ref(p, n, f"v{v}"))
        return out

    def used_by(self, rec: VersionRecord) -> list[RunRecord]:
        prefix = f"artifacts/{rec.project}/{rec.name}/used_by/{rec.version:010d}/"
        out = []
        for item in self.store.list(prefix):
            p, _, rid = item.key[len(prefix):].partition("~")
            try:
                out.append(self.get_run(p, rid))
            except NotFound:
                continue
        return out

    def logged_by(self, rec: VersionRecord) -> RunRecord | None:
        return self.find_run(rec.run) if rec.run else None
