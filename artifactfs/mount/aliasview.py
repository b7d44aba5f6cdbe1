"""Alias names in the mount beyond the store's own: lock-file pins and dated names.

* Under ``mount --lock FILE`` (lockfile.py) a pinned ``P/N/ALIAS`` is a symlink to the pinned
  version, whatever the alias says now; a pin whose version was deleted, or whose digest is not
  the pinned one, answers EIO with a log line, never another version.
* ``P/N/@2026-11-01T12:00`` and ``P/N/best@2026-11-01`` (history.py) are symlinks to the
  version ``latest`` or the alias pointed at, at that time.  They are found by lookup only
  (``ls`` does not list them); ``latest@…`` is computed from the version records the mount
  already holds, an alias's from its history in the store (a worker thread).  A time that
  does not parse, or a dated version that was deleted since, is ENOENT.
"""

from __future__ import annotations

import logging

import trio

from ..catalog import Catalog
from ..errors import InvalidName, NotFound
from ..history import latest_at
from ..lockfile import LockBroken
from ..names import Ref, check_ref_name
from .listings import ArtifactState

log = logging.getLogger(__name__)


def aliases(catalog: Catalog, st: ArtifactState) -> dict[str, int]:
    """Every alias of the artifact with its target, pins applied."""
    out = st.aliases()
    if catalog.pins is not None:
        for pin in catalog.pins.of(st.project, st.name):
            out[pin.alias] = pin.version
    return out


def target(catalog: Catalog, st: ArtifactState, name: str) -> int | None:
    """The version the alias ``name`` leads to in the mount (pins first)."""
    pin = catalog.pins.pin(Ref(st.project, st.name, name)) if catalog.pins else None
    if pin is None:
        return st.aliases().get(name)
    assert catalog.pins is not None
    rec = st.records.get(pin.version) if pin.version in st.live else None
    try:
        catalog.pins.check(pin, rec)
    except LockBroken as e:
        log.error("%s", e)
        raise
    return pin.version


async def dated(catalog: Catalog, st: ArtifactState, name: str,
                limiter: trio.CapacityLimiter) -> int | None:
    """The version a dated name (``ALIAS@TIME``, ``@TIME``) leads to, or None."""
    try:
        ref = Ref(st.project, st.name, check_ref_name(name))
        at = ref.at
    except InvalidName:
        return None
    assert at is not None
    if ref.alias == "latest":
        v = latest_at(st.records.values(), at, st.default_ttl)
    else:
        try:
            v = (await trio.to_thread.run_sync(catalog.resolve, ref, limiter=limiter)).version
        except NotFound:
            return None
    return v if v is not None and v in st.live else None
