"""Version records and alias records: what they hold, and their validation when read back.

A record read from the store is untrusted (SPEC §10): :meth:`VersionRecord.from_json` checks
every field's type and range and names the record and the field when one is wrong, so a damaged
record is one clear :class:`IntegrityError` (and only that record is lost: the catalog reads
the others on).  Unknown fields are ignored, so newer writers can add some.  Values are never
echoed in messages (they could be anything); the field and what it should be are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import model
from .errors import IntegrityError
from .names import NAME_RE, Ref

NO_TTL_TYPES = ("run_table", "code", "job")
MAX_INT = 2**63 - 1  # sizes, counts and numbers fit a signed 64-bit integer
MAX_TTL_DAYS = 1e6
MAX_TEXT = 1 << 20  # a description of a megabyte is already no description


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ttl_allowed(type_: str) -> bool:
    return type_ not in NO_TTL_TYPES and not type_.startswith("wandb-")


class _Check:
    """Field checks of one record; the first failure raises, naming the record and field."""

    def __init__(self, doc: Mapping[str, Any], what: str) -> None:
        self.doc, self.what = doc, what

    def bad(self, key: str, should: str) -> IntegrityError:
        got = type(self.doc.get(key)).__name__ if key in self.doc else "missing"
        return IntegrityError(f"malformed {self.what}: field {key!r} must be {should} "
                              f"(found {got})")

    def integer(self, key: str, optional: bool = False) -> int | None:
        v = self.doc.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_INT:
            raise self.bad(key, "a non-negative integer")
        return v

    def text(self, key: str, default: str | None = None, limit: int = MAX_TEXT) -> str:
        v = self.doc.get(key, default)
        if not isinstance(v, str) or len(v) > limit:
            raise self.bad(key, "a string")
        return v

    def name(self, key: str) -> str:
        v = self.text(key, limit=128)
        if not NAME_RE.fullmatch(v):
            raise self.bad(key, "a name")
        return v

    def digest(self, key: str) -> str:
        v = self.doc.get(key)
        if not model.is_digest(v):
            raise self.bad(key, "a digest")
        assert isinstance(v, str)
        return v

    def time(self, key: str, optional: bool = False) -> str | None:
        v = self.doc.get(key)
        if v is None and optional:
            return None
        try:
            ok = isinstance(v, str) and parse_iso(v).tzinfo is not None
        except ValueError:
            ok = False
        if not ok:
            raise self.bad(key, "an ISO 8601 time with a zone")
        assert isinstance(v, str)
        return v

    def ttl(self, key: str) -> float | None:
        v = self.doc.get(key)
        if v is None:
            return None
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) \
                or not 0 < v <= MAX_TTL_DAYS:
            raise self.bad(key, "a positive number of days")
        return float(v)


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
    def from_json(cls, doc: Any, key: str = "") -> VersionRecord:
        """A record from untrusted JSON: every field checked (see the module docstring)."""
        what = f"version record {key}".rstrip()
        if not isinstance(doc, dict):
            raise IntegrityError(f"malformed {what}: not a JSON object")
        c = _Check(doc, what)
        metadata = doc.get("metadata", {})
        if not isinstance(metadata, dict):
            raise c.bad("metadata", "an object")
        run = doc.get("run")
        if run is not None and (not isinstance(run, str) or "/" not in run or len(run) > 300):
            raise c.bad("run", "PROJECT/RUN_ID")
        tags = doc.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise c.bad("tags", "a list of strings")
        source = doc.get("source")
        if source is not None and (not isinstance(source, str) or len(source) > 300):
            raise c.bad("source", "PROJECT/NAME:vN")
        version, size, count = c.integer("version"), c.integer("size"), c.integer("file_count")
        assert version is not None and size is not None and count is not None
        created = c.time("created_at")
        assert created is not None
        return cls(
            project=c.name("project"), name=c.name("name"), version=version,
            type=c.name("type"), root=c.digest("root"), digest=c.digest("digest"),
            size=size, file_count=count, created_at=created,
            description=c.text("description", ""), metadata=metadata,
            ttl_days=c.ttl("ttl_days"), deleted_at=c.time("deleted_at", optional=True),
            run=run, base=c.integer("base", optional=True), tags=list(tags), source=source,
            updated_at=c.time("updated_at", optional=True))

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


def alias_target(doc: Any, key: str) -> int | None:
    """The version an alias record points at (``None``: the alias was removed)."""
    what = f"alias record {key}"
    if not isinstance(doc, dict):
        raise IntegrityError(f"malformed {what}: not a JSON object")
    return _Check(doc, what).integer("version", optional=True)
