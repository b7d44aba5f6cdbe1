"""Time in refs, and the alias history that makes it possible.

``P/N:latest@2026-11-01T12:00`` and ``P/N:best@2026-11-01`` name the version ``latest`` (or
the alias) pointed at, at that time (:func:`artifactfs.names.parse_when`: UTC unless a zone
is given, so a dated ref means the same version on every node).

* ``latest`` at a time comes from the version records alone (:func:`latest_at`): the highest
  version created at or before it that was not yet deleted or expired then (TTL with today's
  project default, the only one the store keeps).
* A custom alias at a time comes from its history (:func:`alias_at`).  Each alias record is
  ``{"version": N, "at": TIME, "prev": KEY}``: the time it was set and the key of an
  immutable object holding the record it replaced (same shape, so the chain goes back to the
  alias's creation).  :func:`next_doc` writes that object (put-if-absent, named by its
  content, so a retried CAS writes nothing new) *before* the catalog's CAS of the record, so
  each move and its history are one atomic step, and the alias record stays small however
  often it moves.  A removed alias keeps its record as ``{"version": null, …}``, so its
  history survives.  An alias set before history was kept has no ``at``: times before its
  first recorded move are an error, never a guess.

What is subtle: history links come from the store, which is untrusted.  A link must name an
object under the alias's own history prefix, and a walk stops after :data:`MAX_STEPS` links
or at a repeated one, with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError, NotFound

if TYPE_CHECKING:
    from .records import VersionRecord

MAX_STEPS = 100_000
_LINK = re.compile(r"[0-9a-f]{32}\.json")


def _parse_iso(value: str) -> datetime:
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def live_at(rec: VersionRecord, at: datetime, default_ttl: float | None) -> bool:
    """Whether ``rec`` existed and was not deleted or expired at ``at``."""
    if _parse_iso(rec.created_at) > at:
        return False
    if rec.deleted_at is not None and _parse_iso(rec.deleted_at) <= at:
        return False
    exp = rec.expires_at(default_ttl)
    return exp is None or exp > at


def latest_at(records: Iterable[VersionRecord], at: datetime,
              default_ttl: float | None) -> int | None:
    """The version ``latest`` pointed at, at ``at`` (None: no live version then)."""
    live = [r.version for r in records if live_at(r, at, default_ttl)]
    return max(live) if live else None


def history_prefix(project: str, name: str, alias: str) -> str:
    return f"artifacts/{project}/{name}/alias_history/{alias}/"


def next_doc(put_if_absent: Callable[[str, bytes], Any], prefix: str,
             prev: Mapping[str, Any] | None, version: int | None, now: str) -> dict[str, Any]:
    """The alias record that replaces ``prev`` (None: the alias is new) with ``version``
    (None: removed), after saving ``prev`` as a history object under ``prefix``."""
    link = None
    if prev is not None:
        body = json.dumps({"version": prev.get("version"), "at": prev.get("at"),
                           "prev": prev.get("prev")}, sort_keys=True).encode()
        link = hashlib.sha256(body).hexdigest()[:32] + ".json"
        put_if_absent(prefix + link, body)
    return {"version": version, "at": now, "prev": link}


def alias_at(get: Callable[[str], bytes], prefix: str, current: Mapping[str, Any],
             at: datetime, label: str) -> int | None:
    """The version the alias ``label`` pointed at, at ``at`` (None: it did not exist then),
    walking back from its ``current`` record."""
    doc, seen, oldest = current, set(), "now"
    for _ in range(MAX_STEPS):
        when = doc.get("at")
        if not isinstance(when, str):
            raise NotFound(f"alias {label} has no recorded history before {oldest}: it was "
                           "set before artifactfs kept alias history")
        oldest = when
        try:
            moved = _parse_iso(when)
        except ValueError:
            raise IntegrityError(f"alias {label} has a damaged history entry") from None
        if moved <= at:
            v = doc.get("version")
            return v if isinstance(v, int) and not isinstance(v, bool) else None
        link = doc.get("prev")
        if link is None:
            return None  # created after ``at``
        if not isinstance(link, str) or not _LINK.fullmatch(link) or link in seen:
            raise IntegrityError(f"alias {label} has a damaged history link {link!r}")
        seen.add(link)
        try:
            loaded = json.loads(get(prefix + link))
        except NotFound:
            raise IntegrityError(f"alias {label}: history entry {link} is missing") from None
        except ValueError:
            raise IntegrityError(f"alias {label}: history entry {link} is damaged") from None
        if not isinstance(loaded, dict):
            raise IntegrityError(f"alias {label}: history entry {link} is damaged")
        doc = loaded
    raise IntegrityError(f"alias {label} has more than {MAX_STEPS} history entries")
