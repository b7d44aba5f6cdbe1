"""What the mount knows of the catalog: name listings and per-artifact version/alias state.

Everything here expires after ``refresh`` seconds and is re-read *only when used after that*:
there is no poll, and nothing is proportional to the whole store (the root listing is read
when the root is listed or an unknown name is looked up in it; an artifact's versions only when
a path under that artifact is looked up).  Loads run in worker threads, one at a time per
key (single flight), each in a background task that callers wait for.

Outages: a caller that already has a state to serve waits at most ``REFRESH_WAIT`` seconds
for its refresh; past that it gets the last known state and the load goes on in the
background.  A failed or overdue refresh marks the store *down*: every known state is then
served at once, with no new loads, and one background probe (a LIST of ``artifacts/`` every
``PROBE_EVERY`` seconds) finds the store back; any successful load does too.  State never
loaded waits for the store's whole timeout while it is up, ``REFRESH_WAIT`` while it is down,
then fails with EIO.

An artifact's state remembers the listing etag of every version record, so a refresh costs
one LIST plus one GET per *changed* record (a soft delete, a TTL change, a new version), not
one per version; it is also written to the manifest cache so a remount starts warm.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..catalog import Catalog, VersionRecord, parse_iso
from ..errors import IntegrityError, NotFound, StoreUnavailable
from ..names import NAME_RE, RESERVED_PROJECTS, VERSION_RE
from .cache import ManifestCache
from .inodes import VersionInfo

log = logging.getLogger(__name__)
RETRY_AFTER_FAILURE = 5.0
STORE_TIMEOUT = 30.0
REFRESH_WAIT = 2.0  # seconds a walk waits for a refresh of a state it could serve instead
PROBE_EVERY = 2.0  # seconds between probes of a store that is down
MAX_ARTIFACTS = 2048
MAX_LISTINGS = 1024
T = TypeVar("T")


@dataclass
class ArtifactState:
    project: str
    name: str
    fetched: float = 0.0
    records: dict[int, VersionRecord] = field(default_factory=dict)  # live and dead
    etags: dict[int, str] = field(default_factory=dict)
    custom: dict[str, int] = field(default_factory=dict)  # custom alias -> version
    default_ttl: float | None = None
    live: list[int] = field(default_factory=list)
    infos: dict[int, VersionInfo] = field(default_factory=dict)
    # records that can not be read (number -> (etag, why)) and alias records likewise: only
    # they are lost (EIO in the mount), never the artifact
    damaged: dict[int, tuple[str, str]] = field(default_factory=dict)
    bad_aliases: dict[str, str] = field(default_factory=dict)

    def settle(self, now_wall: float | None = None) -> ArtifactState:
        """Recompute which versions are live (deletion and TTL) and the alias map."""
        from datetime import UTC, datetime

        now = datetime.fromtimestamp(now_wall, UTC) if now_wall is not None else None
        self.live = sorted(n for n, r in self.records.items() if r.is_live(self.default_ttl, now))
        return self

    @property
    def latest_unknown(self) -> bool:
        """A damaged record above the highest live version: it may be the latest."""
        return bool(self.damaged) and max(self.damaged) > (self.live[-1] if self.live else -1)

    @property
    def latest(self) -> int | None:
        return self.live[-1] if self.live and not self.latest_unknown else None

    def aliases(self) -> dict[str, int]:
        """Every alias with a live target, ``latest`` included (when known)."""
        live = set(self.live)
        out = {a: v for a, v in sorted(self.custom.items()) if v in live}
        if self.latest is not None:
            out["latest"] = self.latest
        return out

    def why_damaged(self, name: str) -> str | None:
        """Why ``vN``, ``latest`` or an alias can not be served (None: it can, or is absent)."""
        if name == "latest":
            return f"{self.project}/{self.name}: latest is unknown: " + \
                self.damaged[max(self.damaged)][1] if self.latest_unknown else None
        if VERSION_RE.fullmatch(name):
            hit = self.damaged.get(int(name[1:]))
            return hit[1] if hit is not None else None
        return self.bad_aliases.get(name)

    def info(self, n: int) -> VersionInfo:
        vi = self.infos.get(n)
        if vi is None:
            r = self.records[n]
            created = int(parse_iso(r.created_at).timestamp() * 1e9)
            vi = VersionInfo(self.project, self.name, n, r.root, created)
            self.infos[n] = vi
        return vi

    def to_doc(self) -> dict[str, Any]:
        return {"fetched": self.fetched, "ttl": self.default_ttl, "aliases": self.custom,
                "versions": {str(n): [self.etags.get(n, ""), r.to_json()]
                             for n, r in self.records.items()}}

    @classmethod
    def from_doc(cls, project: str, name: str, doc: Any) -> ArtifactState | None:
        try:
            st = cls(project, name, fetched=float(doc["fetched"]), default_ttl=doc["ttl"],
                     custom={str(k): int(v) for k, v in doc["aliases"].items()})
            for k, (etag, rec) in doc["versions"].items():
                st.records[int(k)] = VersionRecord.from_json(rec)
                st.etags[int(k)] = str(etag)
        except Exception:  # an old or damaged document: just reload
            return None
        return st


@dataclass
class _Listing:
    fetched: float
    names: list[str]
    members: frozenset[str]


class Listings:
    """Expiring catalog views for the namespace (trio side; loads go to worker threads)."""

    def __init__(self, catalog: Catalog, manifest: ManifestCache, refresh: float,
                 clock: Callable[[], float], limiter: trio.CapacityLimiter) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.manifest = manifest
        self.refresh = refresh
        self.clock = clock
        self.limiter = limiter
        self._lists: OrderedDict[str, _Listing] = OrderedDict()
        self._arts: OrderedDict[tuple[str, str], ArtifactState] = OrderedDict()
        self._replaced: dict[tuple[str, str], ArtifactState] = {}  # not yet compared
        self._busy: dict[object, trio.Event] = {}
        self.store_ok = True
        self.last_error = ""
        self.timeout = STORE_TIMEOUT
        self.refresh_wait = REFRESH_WAIT
        self.probe_every = PROBE_EVERY
        self._probing = False

    # --- single flight, bounded waits, the outage probe ----------------------------------------
    async def _once(self, key: object, load: Callable[[], Awaitable[None]], known: bool,
                    force: bool = False) -> None:
        """Start ``load`` (unless running) and wait for it: the store's whole timeout for state
        never loaded or a forced reload, else ``refresh_wait`` (see the module docstring)."""
        ev = self._busy.get(key)
        if ev is None:
            ev = self._busy[key] = trio.Event()
            trio.lowlevel.spawn_system_task(self._run_load, key, ev, load, name=f"load {key}")
        wait = self.timeout if force or (not known and self.store_ok) else self.refresh_wait
        with trio.move_on_after(wait) as cs:
            await ev.wait()
        if cs.cancelled_caught and known and self.store_ok:
            self._down(f"{key}", StoreUnavailable(f"no answer within {wait:g}s"))

    async def _run_load(self, key: object, ev: trio.Event,
                        load: Callable[[], Awaitable[None]]) -> None:
        try:
            await load()
        except Exception as e:  # loads report their own failures; never crash the daemon
            log.error("loading %s failed: %s", key, e)
        finally:
            del self._busy[key]
            ev.set()

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in a worker thread; a store that does not answer within
        ``timeout`` (``refresh_wait`` while it is down) is given up on (the thread finishes
        on its own)."""
        wait = self.timeout if self.store_ok else self.refresh_wait
        with trio.move_on_after(wait):
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter,
                                                 abandon_on_cancel=True)
        raise StoreUnavailable(f"the store did not answer within {wait:g}s")

    def _failed(self, what: str, e: Exception) -> None:
        self._down(what, e)
        log.warning("could not refresh %s (serving the last known state): %s", what, e)

    def _down(self, what: str, e: Exception) -> None:
        self.last_error = f"{what}: {e}"
        if self.store_ok:
            log.warning("the store looks unreachable (%s): serving known listings as they are "
                        "until it answers again", self.last_error)
        self.store_ok = False
        if not self._probing:
            self._probing = True
            trio.lowlevel.spawn_system_task(self._probe, name="store probe")

    def _up(self) -> None:
        if not self.store_ok:
            log.info("the store answers again")
        self.store_ok = True

    async def _probe(self) -> None:
        """While the store is down: one cheap request every ``probe_every`` seconds, in a
        thread of its own (not queued behind loads stuck on the dead store)."""
        try:
            while not self.store_ok:
                await trio.sleep(self.probe_every)
                try:
                    await trio.to_thread.run_sync(self.store.list_dirs, "artifacts/",
                                                  abandon_on_cancel=True)
                except Exception as e:
                    self.last_error = f"probe: {e}"
                    continue
                self._up()
        finally:
            self._probing = False

    # --- name listings -------------------------------------------------------------------------
    def _fresh(self, fetched: float) -> bool:
        """Young enough, or the store is down (then known state is served as it is)."""
        return not self.store_ok or self.clock() - fetched < self.refresh

    async def names(self, key: str) -> _Listing:
        """``projects`` or ``collections:P``: the names, refreshed if expired."""
        cur = self._lists.get(key)
        if cur is None or not self._fresh(cur.fetched):
            await self._once(("list", key), lambda: self._load_names(key), cur is not None)
            cur = self._lists.get(key)
            if cur is None:
                raise StoreUnavailable(f"could not list {key}: {self.last_error}")
        self._lists.move_to_end(key)
        return cur

    def cached_names(self, key: str) -> _Listing | None:
        return self._lists.get(key)

    async def _load_names(self, key: str) -> None:
        old = self._lists.get(key)
        try:
            if key == "projects":
                raw = await self._thread(self.catalog.projects)
                names = [p for p in raw if NAME_RE.fullmatch(p) and p not in RESERVED_PROJECTS]
            else:
                raw = await self._thread(self.catalog.collections, key.partition(":")[2])
                names = [n for n in raw if NAME_RE.fullmatch(n)]
            self._up()
        except Exception as e:
            self._failed(key, e)
            if old is not None:
                old.fetched = self.clock() - self.refresh + min(self.refresh, RETRY_AFTER_FAILURE)
            return
        self._lists[key] = _Listing(self.clock(), names, frozenset(names))
        while len(self._lists) > MAX_LISTINGS:
            self._lists.popitem(last=False)

    def expire(self, key: str) -> None:
        cur = self._lists.get(key)
        if cur is not None:
            cur.fetched = float("-inf")

    # --- artifacts -----------------------------------------------------------------------------
    def cached_artifact(self, project: str, name: str) -> ArtifactState | None:
        return self._arts.get((project, name))

    async def artifact(self, project: str, name: str, force: bool = False
                       ) -> tuple[ArtifactState, ArtifactState | None]:
        """(current state, the previous one if it was just replaced)."""
        key = (project, name)
        cur = self._arts.get(key)
        if cur is not None and not force and self._fresh(cur.fetched):
            self._arts.move_to_end(key)
            return cur, self._replaced.pop(key, None)
        await self._once(("art", key), lambda: self._load_artifact(project, name, cur, force),
                         cur is not None, force)
        new = self._arts.get(key)
        if new is None:
            raise StoreUnavailable(f"could not read {project}/{name}: {self.last_error}")
        return new, self._replaced.pop(key, None)

    async def _load_artifact(self, project: str, name: str, prev: ArtifactState | None,
                             force: bool) -> None:
        if prev is None:  # a warm start: the state the manifest cache kept, if any
            prev = await trio.to_thread.run_sync(self._warm, project, name)
            if prev is not None and not force and self._fresh(prev.fetched):
                self._keep((project, name), prev.settle(self.clock()))
                return
        try:
            st = await self._thread(self._read_artifact, project, name, prev)
            self._up()
        except Exception as e:
            self._failed(f"{project}/{name}", e)
            if prev is None:
                return
            prev.fetched = self.clock() - self.refresh + min(self.refresh, RETRY_AFTER_FAILURE)
            st = prev.settle(self.clock())
        self._keep((project, name), st)

    def _keep(self, key: tuple[str, str], st: ArtifactState) -> None:
        """Install a loaded state; the one it replaces is kept for the next caller to compare
        (a load may finish after its caller stopped waiting)."""
        old = self._arts.get(key)
        if old is not None and old is not st:
            self._replaced.setdefault(key, old)
        self._arts[key] = st
        self._arts.move_to_end(key)
        while len(self._arts) > MAX_ARTIFACTS:
            gone, _ = self._arts.popitem(last=False)
            self._replaced.pop(gone, None)

    def _warm(self, project: str, name: str) -> ArtifactState | None:
        """Worker thread: the artifact's state as the manifest cache kept it."""
        return ArtifactState.from_doc(project, name,
                                      self.manifest.get_doc(f"artifact:{project}/{name}"))

    def _read_artifact(self, project: str, name: str, prev: ArtifactState | None
                       ) -> ArtifactState:
        """Worker thread: list version records, re-read the changed ones, read aliases."""
        dkey = f"artifact:{project}/{name}"
        prefix = f"artifacts/{project}/{name}/versions/"
        listed: dict[int, str] = {}
        for item in self.store.list(prefix):
            stem = item.key[len(prefix):]
            if len(stem) == 15 and stem.endswith(".json") and stem[:10].isdigit():
                listed[int(stem[:10])] = item.etag
        st = ArtifactState(project, name, fetched=self.clock())
        todo = []
        for n, etag in listed.items():
            if prev is not None and prev.etags.get(n) == etag and n in prev.records:
                st.records[n], st.etags[n] = prev.records[n], etag
                if n in prev.infos:
                    st.infos[n] = prev.infos[n]
            elif prev is not None and prev.damaged.get(n, ("",))[0] == etag:
                st.damaged[n] = prev.damaged[n]  # still the same damaged record
            else:
                todo.append(n)
        for n, got in self._get_records(project, name, todo):
            if isinstance(got, str):
                log.error("version record of %s/%s:v%d can not be read (only that version is "
                          "lost): %s", project, name, n, got)
                st.damaged[n] = (listed[n], got)
            else:
                st.records[n], st.etags[n] = got, listed[n]
        st.custom = {a: v for a, v in self.catalog.aliases(project, name, st.bad_aliases).items()
                     if not VERSION_RE.fullmatch(a) and a != "latest"}
        for a, why in st.bad_aliases.items():
            if prev is None or a not in prev.bad_aliases:
                log.error("alias %s of %s/%s can not be read: %s", a, project, name, why)
        st.default_ttl = self.catalog.project_ttl(project)
        if prev is None or todo or st.custom != prev.custom or set(st.etags) != set(prev.etags) \
                or st.default_ttl != prev.default_ttl:
            self.manifest.put_docs([(dkey, st.to_doc())])
        return st.settle(self.clock())

    def _get_records(self, project: str, name: str, nums: list[int]
                     ) -> list[tuple[int, VersionRecord | str]]:
        """The records (or, for a damaged one, what is wrong with it)."""
        def one(n: int) -> tuple[int, VersionRecord | str] | None:
            try:
                return n, self.catalog.get_version(project, name, n)[0]
            except NotFound:  # removed between LIST and GET
                return None
            except IntegrityError as e:
                return n, str(e)

        if len(nums) <= 2:
            got = [one(n) for n in nums]
        else:
            with ThreadPoolExecutor(min(16, len(nums)), thread_name_prefix="records") as pool:
                got = list(pool.map(one, nums))
        return [g for g in got if g is not None]

    def expire_artifact(self, project: str, name: str) -> None:
        st = self._arts.get((project, name))
        if st is not None:
            st.fetched = float("-inf")
