"""Runs and lineage in the store: run records and the small marker keys that link runs to the
versions they used and logged (a base of :class:`~artifactfs.catalog.Catalog`).

Keys: ``runs/P/ID.json`` (the run), ``runs/P/ID/inputs/P~N~V`` and ``…/outputs/P~N~V``,
``artifacts/P/N/used_by/%010d/P~ID``.  One marker per link, created put-if-absent, so
concurrent runs never contend on one record.  What is read back is untrusted: a run record
with wrong field types is an IntegrityError naming it, a marker whose name does not parse is
skipped.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IntegrityError, NotFound
from .names import NAME_RE, Ref, check_name, check_project
from .records import VersionRecord, now_iso
from .store.base import Store


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

    @classmethod
    def from_json(cls, data: bytes, key: str) -> RunRecord:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            doc = None
        ok = isinstance(doc, dict) and all(
            isinstance(doc.get(k, ""), str) for k in ("project", "id", "job_type", "group",
                                                        "created_at", "name", "notes")) \
            and isinstance(doc.get("config", {}), dict) and isinstance(doc.get("tags", []), list) \
            and all(isinstance(t, str) for t in doc.get("tags", []))
        if not ok:
            raise IntegrityError(f"malformed run record {key}")
        assert isinstance(doc, dict)
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _tag(tag: str) -> tuple[str, str, int] | None:
    """``P~N~V`` from a marker name, or None if it does not parse."""
    parts = tag.split("~")
    if len(parts) != 3 or not all(NAME_RE.fullmatch(p) for p in parts[:2]) \
            or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class Runs:
    """The run and lineage methods of the catalog."""

    store: Store

    def create_run(self, project: str, job_type: str = "", group: str = "",
                   run_id: str | None = None, config: Mapping[str, Any] | None = None,
                   **extra: Any) -> RunRecord:
        """A new run, or the existing one with that id (``extra``: name, tags, notes)."""
        check_project(project)
        run_id = check_name(run_id, "run id") if run_id else new_run_id()
        rec = RunRecord(project=project, id=run_id, job_type=job_type, group=group,
                        created_at=now_iso(), config=dict(config or {}), **extra)
        self.store.put_if_absent(f"runs/{project}/{run_id}.json",
                                 json.dumps(asdict(rec), sort_keys=True).encode())
        return self.get_run(project, run_id)

    def get_run(self, project: str, run_id: str) -> RunRecord:
        key = f"runs/{project}/{run_id}.json"
        try:
            return RunRecord.from_json(self.store.get(key), key)
        except NotFound:
            raise NotFound(f"no run {project}/{run_id}") from None

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
            got = _tag(item.key[len(prefix):])
            if got is not None:
                out.append(Ref(got[0], got[1], f"v{got[2]}"))
        return out

    def used_by(self, rec: VersionRecord) -> list[RunRecord]:
        prefix = f"artifacts/{rec.project}/{rec.name}/used_by/{rec.version:010d}/"
        out = []
        for item in self.store.list(prefix):
            p, _, rid = item.key[len(prefix):].partition("~")
            if not NAME_RE.fullmatch(p) or not NAME_RE.fullmatch(rid):
                continue
            try:
                out.append(self.get_run(p, rid))
            except NotFound:
                continue
        return out

    def logged_by(self, rec: VersionRecord) -> RunRecord | None:
        return self.find_run(rec.run) if rec.run else None
