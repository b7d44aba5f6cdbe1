"""The node's list of artifactfs mounts, and the mount-table chores around it.

Each daemon writes ``<runtime>/mounts/<id>.json`` once its mount is live (mountpoint, pid,
store, cache directory, control socket, log file) and removes it when it exits; ``status`` and
``unmount`` read them.  A record whose pid is gone is stale and ignored (and pruned).  The
directory is checked and its files opened as ``rundir.py`` says; a record is trusted only when
it is its owner's and names its own socket and log (:func:`load_record`).

What is subtle: after ``kill -9`` the kernel still lists the mount but every request fails with
ENOTCONN ("transport endpoint is not connected"); only a lazy unmount clears it.  ``stat`` can
not tell: the kernel answers it from cached attributes for ``--refresh`` seconds.  A *dead*
mount is a ``fuse.artifactfs`` entry of the mount table (``/proc/self/mountinfo``) whose
registry record is missing or names a dead pid, confirmed by ``statfs`` through it (never
cached: ENOTCONN on a dead connection), so a live mount of a daemon this registry does not
know (another user's) is never taken for dead.  Recovery lazily unmounts dead layers one by
one until a live mount or the directory below shows.  Nothing here ever ``stat``s a mountpoint
served by *this* process (that would wait on our own FUSE loop); the device number is read
from the mount table instead.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ArtifactfsError, Busy, NotFound, PermissionDenied
from . import rundir

log = logging.getLogger(__name__)
FSTYPE = "fuse.artifactfs"
PROBE_TIMEOUT = 5.0  # seconds a statfs through a mount may take before it counts as no answer


@dataclass
class MountRecord:
    mountpoint: str
    pid: int
    store: str
    cache_dir: str
    control: str
    log: str = ""
    started: float = 0.0

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def mount_id(mountpoint: str) -> str:
    return hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:16]


def _dir(create: bool = False) -> str:
    """This user's checked ``mounts`` directory (see rundir.py; made when ``create``)."""
    return rundir.secure_dir(create=create) or rundir.mounts_dir()


def paths(mountpoint: str) -> dict[str, str]:
    """Registry file, control socket and daemon log of a mountpoint."""
    d, mid = _dir(), mount_id(mountpoint)
    return {"record": os.path.join(d, f"{mid}.json"), "control": os.path.join(d, f"{mid}.sock"),
            "log": os.path.join(d, f"{mid}.log")}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def write(rec: MountRecord) -> None:
    _dir(create=True)
    path = paths(rec.mountpoint)["record"]
    tmp = f"{path}.{os.getpid()}.tmp"
    rundir.remove(tmp)
    with os.fdopen(rundir.open_file(tmp, os.geteuid(), os.O_WRONLY | os.O_CREAT, 0o644),
                   "w") as f:
        json.dump(asdict(rec), f)
    os.replace(tmp, path)


def remove(mountpoint: str, pid: int) -> None:
    """Drop the record (and the log) of the daemon ``pid`` at ``mountpoint``."""
    rec = read(mountpoint)
    if rec is not None and rec.pid == pid:
        rundir.remove(paths(mountpoint)["record"], *([rec.log] if rec.log else []))


def load_record(path: str, owner: int | None = None, strict: bool = True
                ) -> MountRecord | None:
    """The record at ``path`` in a checked runtime directory of ``owner`` (default: this
    user), or None when there is none or it is malformed.  The file must be ``owner``'s (no
    symlink) and name the control socket and log its mount id gives in that directory: a
    record that points elsewhere is refused (:class:`PermissionDenied`, or with ``strict``
    False a warning and None)."""
    owner = os.geteuid() if owner is None else owner
    try:
        with os.fdopen(rundir.open_file(path, owner), "rb") as f:
            doc: dict[str, Any] = json.loads(f.read(1 << 20))
        rec = MountRecord(**doc)
        d, mid = os.path.dirname(path), mount_id(str(rec.mountpoint))
        where = {"control": os.path.join(d, f"{mid}.sock"),
                 "log": os.path.join(d, f"{mid}.log")}
        if os.path.basename(path) != f"{mid}.json" or rec.control != where["control"] or \
                rec.log not in ("", where["log"]) or not isinstance(rec.pid, int) or \
                not isinstance(rec.mountpoint, str):
            raise PermissionDenied(f"refusing the mount record {path}: it names a mount, "
                                   "socket or log that is not its own")
        return rec
    except (FileNotFoundError, ValueError, TypeError):
        return None
    except PermissionDenied as e:
        refused = e
    except OSError as e:
        if e.errno != errno.ELOOP:
            return None
        refused = PermissionDenied(f"refusing the mount record {path}: it is a symlink")
    if strict:
        raise refused
    log.warning("%s", refused)
    return None


def _load(path: str) -> MountRecord | None:
    return load_record(path, strict=False)


def read(mountpoint: str) -> MountRecord | None:
    return load_record(paths(mountpoint)["record"])


def _all_records() -> list[MountRecord]:
    try:
        names = sorted(os.listdir(_dir()))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.endswith(".json") and (rec := _load(os.path.join(_dir(), name))) is not None:
            out.append(rec)
    return out


def records() -> list[MountRecord]:
    """Live mounts of this node.  Records of dead daemons are pruned, except while their
    dead mount is still in the mount table (``dead_mounts`` reports those)."""
    out = []
    for rec in _all_records():
        if rec.alive:
            out.append(rec)
        elif not layers(rec.mountpoint):
            with contextlib.suppress(OSError):
                os.unlink(paths(rec.mountpoint)["record"])
    return out


# --- the kernel's mount table ---------------------------------------------------------------

def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def layers(mountpoint: str) -> list[dict[str, str]]:
    """The artifactfs mounts stacked at ``mountpoint``, bottom first, from the mount table:
    ``{"dev": "0:53", "fstype": "fuse.artifactfs", "source": …}``."""
    return [m for m in _table(os.path.abspath(mountpoint)) if m["fstype"] == FSTYPE]


def _table(mp: str | None = None) -> list[dict[str, str]]:
    """Mount table entries (at ``mp``, or all with their ``mountpoint``), in mount order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) < 5:
                continue
            where = _unescape(fields[4])
            if mp is None or where == mp:
                rf = right.split()
                out.append({"mountpoint": where, "dev": fields[2], "fstype": rf[0] if rf else "",
                            "source": _unescape(rf[1]) if len(rf) > 1 else ""})
    return out


def mountinfo(mountpoint: str) -> dict[str, str] | None:
    """The top mount at ``mountpoint`` (any file system type), or None."""
    found = _table(os.path.abspath(mountpoint))
    return found[-1] if found else None


def answers(mountpoint: str, timeout: float = PROBE_TIMEOUT) -> bool | None:
    """Whether the file system at ``mountpoint`` answers a ``statfs``, which FUSE always sends
    to its daemon: False on a dead connection (ENOTCONN, ECONNABORTED), None when there is no
    telling (another user's mount: EACCES; no answer within ``timeout``).  Run in a thread so
    a wedged daemon can not hang the caller; never call it on this process's own mount."""
    result: list[bool | None] = []

    def probe() -> None:
        try:
            os.statvfs(mountpoint)
            result.append(True)
        except OSError as e:
            result.append(False if e.errno in (errno.ENOTCONN, errno.ECONNABORTED) else None)

    t = threading.Thread(target=probe, name="statfs-probe", daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else None


def is_dead(mountpoint: str) -> bool:
    """Whether the top mount at ``mountpoint`` is an artifactfs mount whose daemon is gone:
    in the mount table, no live daemon in the registry, and a dead FUSE connection."""
    mp = os.path.abspath(mountpoint)
    info = mountinfo(mp)
    if info is None or info["fstype"] != FSTYPE:
        return False
    rec = read(mp)
    if rec is not None and rec.alive:
        return False
    return answers(mp) is False


def lazy_unmount(mountpoint: str) -> None:
    """Detach the top mount at ``mountpoint``: ``umount -l`` as root, else ``fusermount3 -u
    -z`` (which only detaches mounts of the caller)."""
    before = len(_table(os.path.abspath(mountpoint)))
    cmds = [["fusermount3", "-u", "-z", mountpoint], ["fusermount", "-u", "-z", mountpoint]]
    if os.geteuid() == 0:
        cmds.insert(0, ["umount", "-l", mountpoint])
    for cmd in cmds:
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if r.returncode == 0:
            return
    if len(_table(os.path.abspath(mountpoint))) >= before:
        raise ArtifactfsError(f"could not detach the dead mount at {mountpoint}")


def recover_stale(mountpoint: str) -> int:
    """Clear the dead mounts stacked at ``mountpoint`` (left by killed daemons) and their
    records; returns how many layers were detached."""
    mp = os.path.abspath(mountpoint)
    rec = read(mp)
    n = 0
    while n < 16 and is_dead(mp):
        log.warning("detaching the dead mount at %s (its daemon %s)", mp,
                    f"pid {rec.pid} died" if rec is not None else "is gone")
        lazy_unmount(mp)
        n += 1
    if rec is not None and not rec.alive and not is_dead(mp):
        remove(mp, rec.pid)
    return n


@dataclass
class DeadMount:
    """A mount of this node whose daemon is gone, and what to do about it."""

    mountpoint: str
    pid: int  # the dead daemon's, from its record; 0 when no record is left
    store: str
    fix: str


def dead_mounts() -> list[DeadMount]:
    """Dead artifactfs mounts of this node: records of dead daemons whose mount is still in
    the table, and artifactfs mounts of the table that no live daemon of the registry serves
    (confirmed dead by :func:`answers`)."""
    recs = {r.mountpoint: r for r in _all_records()}
    live = {mp for mp, r in recs.items() if r.alive}
    seen: set[str] = set()
    out = []
    for m in _table():
        mp = m["mountpoint"]
        if m["fstype"] != FSTYPE or mp in live or mp in seen:
            continue
        seen.add(mp)
        if not is_dead(mp):
            continue
        rec = recs.get(mp)
        out.append(DeadMount(mp, rec.pid if rec else 0, rec.store if rec else m["source"],
                             f"artifactfs unmount {mp}  (or remount: artifactfs mount {mp})"))
    return out


def unmount(mountpoint: str, timeout: float = 15.0) -> None:
    """Cleanly unmount an artifactfs mount and wait for its daemon to exit."""
    mp = os.path.abspath(mountpoint)
    info = mountinfo(mp)
    rec = read(mp)
    if info is None:
        raise NotFound(f"nothing is mounted at {mp}")
    if not info["fstype"].startswith("fuse"):
        raise ArtifactfsError(f"{mp} is not an artifactfs mount ({info['fstype']})")
    if is_dead(mp):
        recover_stale(mp)
        return
    cmd = ["umount", mp] if os.geteuid() == 0 else ["fusermount3", "-u", mp]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip()
        if "busy" in msg.lower():
            raise Busy(f"{mp} is busy (a process is using it): {msg}")
        raise ArtifactfsError(f"could not unmount {mp}: {msg}")
    if rec is not None:
        deadline = time.monotonic() + timeout
        while rec.alive and time.monotonic() < deadline:
            time.sleep(0.02)
