"""The mount daemon: wiring of store, caches, namespace and pyfuse3 under one trio loop.

Life of a mount: detach a dead mount left by a killed daemon (registry.py; never stack) →
(unless ``foreground``) fork; the parent waits on a pipe until the child says the mount is
live or why it failed, so ``artifactfs mount`` returns only once the mountpoint works →
``pyfuse3.init`` → one nursery running the FUSE loop, the control socket and a signal watcher
→ tune the kernel's knobs for the new connection (root only) → registry record, ``READY=1``
to systemd → serve.  ``SIGTERM`` / ``SIGINT`` end the FUSE loop, and
``pyfuse3.close(unmount=True)`` unmounts; an external ``umount`` ends it too.  Either way the
manifest cache is closed cleanly and the record removed.

What is subtle: the fork happens before any trio loop exists and with no other thread left
running (forking a threaded process is unsafe; a dead-mount probe that did not end in time
stops the mount before the fork), and nothing in this process may touch its own mountpoint
synchronously before the FUSE loop runs (it would wait for itself): kernel knobs are found
through ``/proc/self/mountinfo``, never ``stat``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from .. import config as config_mod
from ..catalog import Catalog
from ..config import Config, parse_size
from ..drafts import commit
from ..drafts.area import DraftArea
from ..drafts.files import manifest_dicts, manifest_index, manifest_loader
from ..drafts.ops import DraftOps
from ..errors import ArtifactfsError, PermissionDenied, UsageError
from ..lockfile import Lock
from ..refs.authority import Gate
from ..repo import Repo
from ..safetext import SafeFormatter
from ..store import open_store
from . import fuseloop, protocol, registry, requests, rundir
from .access import GROUPS_TTL, Access
from .blobcache import BlobCache
from .cache import ManifestCache
from .consumers import Consumers
from .control import ControlServer, Peer, UidSlots
from .namespace import Namespace
from .ops import Operations

log = logging.getLogger("artifactfs.mount")
READ_AHEAD_KB = int(os.environ.get("ARTIFACTFS_READ_AHEAD_KB", "1024"))
MAX_BACKGROUND = int(os.environ.get("ARTIFACTFS_MAX_BACKGROUND", "0"))
COMMITS = 8  # commits and upserts running at once, all users together
DRAFT_SLOTS = 2  # draft requests one uid may have running at once (SPEC §9)
DRAIN_SECONDS = 60.0  # at stop, control requests in flight get this long to reply


@dataclass
class MountOptions:
    mountpoint: str
    allow_other: bool = False
    foreground: bool = False
    lock: Lock | None = None  # mount --lock: pinned aliases (else $ARTIFACTFS_LOCK)


def setup_logging(level: int = logging.INFO) -> None:
    """One line per record on stderr (the journal, or the log file): untrusted text in a
    message (names, URIs, paths from the store) is escaped, so it can not forge a line."""
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s artifactfs[%(process)d] %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def sd_notify(message: str) -> None:
    """Tell systemd (``Type=notify``) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify failed: %s", e)


def mount(cfg: Config, opts: MountOptions) -> None:
    """``artifactfs mount``: returns (in the caller) once the mount is live."""
    mp = os.path.realpath(opts.mountpoint)
    rundir.secure_dir(create=True)  # an unsafe runtime directory is refused here, in the CLI
    registry.recover_stale(mp)
    if registry.layers(mp):  # never stack: a live mount, or a dead one that is not ours
        rec = registry.read(mp)
        who = f" (daemon pid {rec.pid})" if rec is not None and rec.alive else ""
        raise ArtifactfsError(f"{mp} is already mounted{who}")
    if not os.path.isdir(mp):
        raise UsageError(f"mountpoint {mp} is not a directory")
    opts.mountpoint = mp
    if opts.foreground:
        serve(cfg, opts, ready_fd=None)
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        _wait_ready(r, pid)
        return
    os.close(r)
    code = 1
    try:
        os.setsid()
        _detach_stdio(registry.paths(mp)["log"])
        serve(cfg, opts, ready_fd=w)
        code = 0
    except BaseException as e:  # report to the waiting parent, never return into the CLI
        with contextlib.suppress(Exception):
            log.exception("mount failed")
            os.write(w, f"error: {e}\n".encode())
    finally:
        os._exit(code)


def _wait_ready(r: int, pid: int) -> None:
    buf = b""
    with os.fdopen(r, "rb") as f:
        buf = f.read()  # EOF once the child reported (and closed) or died
    msg = buf.decode(errors="replace").strip()
    if msg.startswith("ok"):
        return
    if not msg:
        _, status = os.waitpid(pid, os.WNOHANG)
        msg = f"the mount daemon exited before the mount was ready (status {status})"
    raise ArtifactfsError(msg.removeprefix("error: "))


def _detach_stdio(log_path: str) -> None:
    """stdin/stdout to /dev/null, stderr (the log) to a new 0600 file in the checked runtime
    directory, never through a symlink (rundir.py); it is removed when the mount ends."""
    null = os.open(os.devnull, os.O_RDWR)
    logf = rundir.create_log(log_path)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(logf, 2)
    os.close(null)
    os.close(logf)
    os.chdir("/")


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))


def _progress_lines(peer: Peer, every: float = 0.2) -> commit.Report | None:
    """A commit's progress as lines to the client (from the commit's worker thread), at most
    one per ``every`` seconds plus the last; a client that went away stops hearing them."""
    say = peer.say
    if say is None:
        return None
    token = trio.lowlevel.current_trio_token()  # reports come from ingest's pool threads
    lock = threading.Lock()  # one line at a time on the stream
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        with lock:
            now = time.monotonic()
            if done < total and now - last < every:
                return
            last = now
            try:
                trio.from_thread.run(say, protocol.progress(done, total), trio_token=token)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError,
                    OSError):
                pass
    return report


class Daemon:
    """One mount's objects; :meth:`run` is the trio main."""

    def __init__(self, cfg: Config, opts: MountOptions, ready_fd: int | None) -> None:
        self.cfg, self.opts, self.ready_fd = cfg, opts, ready_fd
        self.store = open_store(cfg.store, private=cfg.restricts_reads)
        self.store_warning = self._store_warning(cfg)
        sid = hashlib.sha256(self.store.uri.encode()).hexdigest()[:16]
        self.manifest = ManifestCache(os.path.join(cfg.cache_dir, "manifest", sid))
        self.blobs = BlobCache(self.store, os.path.join(cfg.cache_dir, "blobs"), cfg.cache_size,
                               sidecar_get=self._sidecar_get, sidecar_put=self._sidecar_put,
                               gate=Gate(cfg.references, shared=opts.allow_other))  # SPEC §7
        mid = registry.mount_id(opts.mountpoint)
        try:  # drafts belong to this store at this mount point: a remount there finds them
            self.area = DraftArea(os.path.join(cfg.cache_dir, "drafts", sid, mid),
                                  manifest_loader(self.manifest, self.store), self.blobs.copy_to)
        except BaseException:
            self.blobs.close()
            self.manifest.close()
            raise
        self.repo = Repo(self.store)
        if opts.lock is not None:
            self.repo.catalog.pins = opts.lock
        self.nodes = manifest_dicts(self.manifest, self.repo.catalog.load_node)
        self.node_index = manifest_index(self.manifest, self.repo.catalog.load_index)
        self.access = Access(cfg.projects)
        self.may_write = self.access.may_write
        self.writer = writer_id(mid)
        catalog = self._catalog()
        self.ns = Namespace(catalog, self.manifest, self.blobs, refresh=cfg.refresh,
                            invalidate=self._invalidate, access=self.access,
                            drafts=lambda ns: DraftOps(ns, self.area, catalog, self.may_write))
        self.ns.drafts.guard_walks = opts.allow_other  # else only this uid reaches the mount
        self.paths = registry.paths(opts.mountpoint)
        self.control = ControlServer(self.paths["control"])
        self.control.register("stats", self._stats)
        self.control.register("refresh", self._refresh)  # admin: protocol.ADMIN_OPS
        self.control.register("cleanup", self._cleanup)
        self.consumers = Consumers(self.repo.catalog, self.may_write)
        self.ns.consumers = self.consumers
        self.control.register("run.attach", self._attach_run)
        for op in protocol.DRAFT_OPS:
            self.control.register(op, self._draft_request)
        self.commits = trio.CapacityLimiter(COMMITS)  # commits and upserts of all users
        self.slots = UidSlots(DRAFT_SLOTS)  # draft requests of one user at a time
        self.config_watch = config_mod.Watch(cfg.config_file)
        self.started = time.time()
        self.serving = True

    def _catalog(self) -> Catalog:
        """The namespace's catalog, with the same pinned aliases as the repo's."""
        cat = Catalog(self.store)
        cat.pins = self.repo.catalog.pins
        return cat

    def _store_warning(self, cfg: Config) -> str | None:
        """Logged loudly, and shown by status: the ACL guards the mount, not the store."""
        warning = self.store.exposure(
            {p: frozenset((*a.readers, *a.writers)) for p, a in cfg.projects.items() if a.readers})
        if warning:
            log.warning("WARNING: %s", warning)
        return warning

    def _sidecar_get(self, key: str) -> str | None:
        v = self.manifest.get_doc(key)
        return v if isinstance(v, str) else None

    def _sidecar_put(self, key: str, value: str) -> None:
        self.manifest.put_docs([(key, value)])

    def _invalidate(self, parent: int, name: bytes) -> None:
        if not self.serving:  # the FUSE loop ended: the session may be gone
            return
        with contextlib.suppress(Exception):
            pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)

    # --- control requests ------------------------------------------------------------------
    async def _stats(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        reachable: bool | None = None
        if req.get("probe"):
            with trio.move_on_after(5):
                reachable = False
                await trio.to_thread.run_sync(self.store.list_dirs, "artifacts/",
                                              abandon_on_cancel=True)
                reachable = True
        ns = self.ns.stats()
        if peer.uid not in (0, os.geteuid()):  # another user's errors may name their paths
            ns.pop("last_error", None)
        return {"mountpoint": self.opts.mountpoint, "store": self.store.uri, "pid": os.getpid(),
                "uptime": time.time() - self.started, "cache": self.blobs.stats(),
                "namespace": ns, "store_reachable": reachable,
                "cache_dir": self.cfg.cache_dir, "store_warning": self.store_warning}

    async def _refresh(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        project, _, name = str(req.get("artifact", "")).partition("/")
        if not project or not name:
            raise UsageError("refresh needs artifact=PROJECT/NAME")
        await self.ns.refresh_artifact(project, name)
        return {}

    async def _draft_request(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """draft.create/list/discard, commit, upsert: the engine runs in a worker thread with
        the caller's uid (``SO_PEERCRED``); a commit's version is in the mount before the
        reply, and a committed, upserted or discarded draft leaves the kernel's caches."""
        op = req.get("op")
        async with self.slots(peer.uid):
            reply = await trio.to_thread.run_sync(functools.partial(
                requests.handle_request, req, peer.uid, self.area, self.repo,
                may_write=self.may_write, may_read=self.access.may_read, writer=self.writer,
                load=self.nodes, index=self.node_index,
                report=_progress_lines(peer) if req.get("progress") else None),
                limiter=self.commits if op in protocol.STORE_WRITES else None)
        if reply.get("ok") and op in ("commit", "upsert", "draft.discard"):
            self.ns.drafts.draft_gone(str(req["project"]), str(req["name"]), str(req["id"]))
        if reply.get("ok") and op == "commit":
            try:
                await self.ns.refresh_artifact(str(req["project"]), str(req["name"]))
            except Exception as e:  # the version exists; the mount catches up on refresh
                log.warning("could not show the new version at once: %s", e)
        return reply

    async def _attach_run(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The caller (and its children) read as run ``req["run"]`` (lineage from reads)."""
        run = str(req.get("run", ""))
        if not self.may_write(peer.uid, run.partition("/")[0]):
            raise PermissionDenied(f"you may not record runs in project {run.partition('/')[0]}")
        self.consumers.attach(peer.pid, peer.uid, run)
        return {}

    async def _cleanup(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        target = parse_size(req.get("size", 0))
        freed = await trio.to_thread.run_sync(self.blobs.cleanup, target)
        return {"freed": freed, "cache": self.blobs.stats()}

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until the FUSE loop ends (signal or unmount), then let writes already
        replied to reach their files and control requests in flight (a commit) send their
        replies, each bounded, before stopping the rest."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.control.serve)
            nursery.start_soon(self._signals, nursery)
            nursery.start_soon(self._after_start)
            nursery.start_soon(self._watch_config)
            await pyfuse3.main()
            self.serving = False
            with trio.move_on_after(30):
                await self.ns.drafts.settle_all()
            with trio.move_on_after(DRAIN_SECONDS):
                await self.control.drain()
            if self.control.inflight:
                log.warning("stopping with %d control request(s) unanswered",
                            self.control.inflight)
            nursery.cancel_scope.cancel()

    async def _watch_config(self) -> None:
        """Access rules follow the config file (SPEC §9: rights are checked against the
        current config); a broken edit keeps the rules of before, loudly."""
        while True:
            await trio.sleep(GROUPS_TTL)
            try:
                new = await trio.to_thread.run_sync(self.config_watch.changed)
            except ArtifactfsError as e:
                log.error("the config changed but is invalid; keeping the access rules of "
                          "before: %s", e)
                continue
            if new is not None and new.projects != self.access.projects:
                self.access.replace(new.projects)
                log.info("access rules reloaded from the config (%d projects)",
                         len(new.projects))
                self.store_warning = self._store_warning(new)
            if new is not None and new.references != self.blobs.gate.references:
                self.blobs.gate = Gate(new.references, shared=self.opts.allow_other)
                log.info("[references] reloaded from the config")

    async def _signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                log.info("signal %s: unmounting", signal.Signals(sig).name)
                sd_notify("STOPPING=1")
                fuseloop.terminate()
                return

    async def _after_start(self) -> None:
        await trio.to_thread.run_sync(tune_kernel, self.opts.mountpoint)
        registry.write(registry.MountRecord(
            mountpoint=self.opts.mountpoint, pid=os.getpid(), store=self.store.uri,
            cache_dir=self.cfg.cache_dir, control=self.paths["control"],
            log="" if self.opts.foreground else self.paths["log"], started=self.started))
        log.info("mounted %s at %s", self.store.uri, self.opts.mountpoint)
        if self.ready_fd is not None:
            os.write(self.ready_fd, b"ok\n")
            os.close(self.ready_fd)
            self.ready_fd = None
        sd_notify(f"READY=1\nMAINPID={os.getpid()}")
        await trio.to_thread.run_sync(self.ns.drafts.warm)
        if not self.blobs.in_place:
            await trio.to_thread.run_sync(self.blobs.scan)

    def close(self) -> None:
        self.area.close()
        self.blobs.close()
        self.manifest.close()
        registry.remove(self.opts.mountpoint, os.getpid())


def writer_id(mount_id: str) -> str:
    """This mount's name among the writers of a distributed draft: the host name (made a
    valid name) and the mount's id, so two mounts on one node are two writers."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-._")[:100] or "node"
    return f"{host}-{mount_id[:8]}"


def tune_kernel(mountpoint: str) -> dict[str, int]:
    """As root, raise the new connection's readahead (bigger read requests) and queue depth."""
    done: dict[str, int] = {}
    info = registry.mountinfo(mountpoint)
    if os.geteuid() != 0 or info is None:
        return done
    knobs = [(f"/sys/class/bdi/{info['dev']}/read_ahead_kb", READ_AHEAD_KB)]
    minor = info["dev"].partition(":")[2]
    if MAX_BACKGROUND:
        knobs.append((f"/sys/fs/fuse/connections/{minor}/max_background", MAX_BACKGROUND))
    for path, value in knobs:
        if value <= 0:
            continue
        try:
            with open(path, "w") as f:
                f.write(str(value))
            done[path] = value
        except OSError as e:
            log.info("could not tune %s: %s", path, e)
    return done


def serve(cfg: Config, opts: MountOptions, ready_fd: int | None) -> None:
    """Mount and serve until unmounted or signalled (this process)."""
    setup_logging()
    _raise_nofile()
    daemon = Daemon(cfg, opts, ready_fd)
    source = daemon.store.uri if "," not in daemon.store.uri else "artifactfs"
    options = {f"fsname={source}", "subtype=artifactfs", "noatime"}
    if opts.allow_other:
        options.add("allow_other")
    try:
        pyfuse3.init(Operations(daemon.ns), opts.mountpoint, options)
    except RuntimeError as e:
        daemon.close()
        raise ArtifactfsError(f"could not mount {opts.mountpoint}: {e}") from None
    fuseloop.install()
    try:
        trio.run(daemon.run)
    finally:
        with contextlib.suppress(Exception):
            pyfuse3.close(unmount=True)
        daemon.close()
        log.info("unmounted %s", opts.mountpoint)
