"""The node's list of artifactfs mounts, and the mount-table chores around it.

Each daemon writes ``<runtime_dir>/mounts/<id>.json`` once its mount is live (mountpoint, pid,
store, cache directory, control socket, log file) and removes it when it exits; ``status`` and
``unmount`` read them.  A record whose pid is gone is stale and ignored (and pruned).

What is subtle: after ``kill -9`` the kernel still lists the mount but every access fails with
ENOTCONN ("transport endpoint is not connected"); only a lazy unmount clears it.  Nothing here
ever ``stat``s a mountpoint served by *this* process (that would wait on our own FUSE loop);
the device number is read from ``/proc/self/mountinfo`` instead.
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
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..config import runtime_dir
from ..errors import ArtifactfsError, Busy, NotFound

log = logging.getLogger(__name__)


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


def _dir() -> str:
    return os.path.join(runtime_dir(), "mounts")


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
    os.makedirs(_dir(), mode=0o755, exist_ok=True)
    path = paths(rec.mountpoint)["record"]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(rec), f)
    os.replace(tmp, path)


def remove(mountpoint: str, pid: int) -> None:
    rec = read(mountpoint)
    if rec is not None and rec.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths(mountpoint)["record"])


def _load(path: str) -> MountRecord | None:
    try:
        with open(path) as f:
            doc: dict[str, Any] = json.load(f)
        return MountRecord(**doc)
    except (OSError, ValueError, TypeError):
        return None


def read(mountpoint: str) -> MountRecord | None:
    return _load(paths(mountpoint)["record"])


def records() -> list[MountRecord]:
    """Live mounts of this node (stale records are pruned)."""
    out = []
    try:
        names = sorted(os.listdir(_dir()))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        rec = _load(os.path.join(_dir(), name))
        if rec is None:
            continue
        if rec.alive:
            out.append(rec)
        else:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(_dir(), name))
    return out


# --- the kernel's mount table ---------------------------------------------------------------

def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def mountinfo(mountpoint: str) -> dict[str, str] | None:
    """``{"dev": "0:53", "fstype": "fuse.artifactfs", "source": …}`` of the top mount there."""
    mp = os.path.abspath(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and _unescape(fields[4]) == mp:
                rf = right.split()
                found = {"dev": fields[2], "fstype": rf[0] if rf else "",
                         "source": _unescape(rf[1]) if len(rf) > 1 else ""}
    return found


def is_stale(mountpoint: str) -> bool:
    try:
        os.stat(mountpoint)
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def lazy_unmount(mountpoint: str) -> None:
    """Detach a (dead) mount: ``fusermount3 -u -z``, or ``umount -l`` as root."""
    cmds = [["fusermount3", "-u", "-z", mountpoint], ["fusermount", "-u", "-z", mountpoint]]
    if os.geteuid() == 0:
        cmds.insert(0, ["umount", "-l", mountpoint])
    for cmd in cmds:
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if r.returncode == 0:
            return
    if mountinfo(mountpoint) is not None:
        raise ArtifactfsError(f"could not detach the dead mount at {mountpoint}")


def recover_stale(mountpoint: str) -> bool:
    """Clear a mount left behind by a killed daemon; True if there was one."""
    if not is_stale(mountpoint):
        return False
    log.warning("recovering the stale mount at %s (its daemon died)", mountpoint)
    lazy_unmount(mountpoint)
    return True


def unmount(mountpoint: str, timeout: float = 15.0) -> None:
    """Cleanly unmount an artifactfs mount and wait for its daemon to exit."""
    mp = os.path.abspath(mountpoint)
    info = mountinfo(mp)
    rec = read(mp)
    if info is None:
        raise NotFound(f"nothing is mounted at {mp}")
    if not info["fstype"].startswith("fuse"):
        raise ArtifactfsError(f"{mp} is not an artifactfs mount ({info['fstype']})")
    if is_stale(mp):
        lazy_unmount(mp)
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
