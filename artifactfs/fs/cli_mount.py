"""``artifactfs mount``, ``unmount``, ``status`` and ``cache``: click commands over fs/mount.py.

Imported by every CLI run (the CLI registers every command found here), so this module imports
nothing heavy at import time: pyfuse3, trio and lmdb are loaded only by the command that needs
them.  The context object is the CLI's (a ``Config``, or an object with ``.config``).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import click

from ..config import Config, absolute_path, check_store_exists, parse_size
from ..errors import ArtifactfsError, UsageError


def _config(obj: Any) -> Config:
    cfg = getattr(obj, "config", obj)
    if not isinstance(cfg, Config):
        from .. import config as config_mod

        cfg = config_mod.load()
    return cfg


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# not readable=True: a mount whose daemon was killed fails access() (ENOTCONN) while the kernel
# still answers stat() from cached attributes, and mount/unmount must reach their recovery
MOUNTPOINT = click.Path(file_okay=False, readable=False)


@click.command()
@click.argument("mountpoint", type=MOUNTPOINT)
@click.option("--cache-dir", metavar="DIR", help="Local cache directory.")
@click.option("--cache-size", metavar="SIZE", help="Cache bound, e.g. 50GiB.")
@click.option("--refresh", type=float, metavar="SEC",
              help="Seconds before version and alias lists are re-read (default 10).")
@click.option("--allow-other", is_flag=True, help="Let other users use the mount.")
@click.option("--foreground", "-f", is_flag=True, help="Do not daemonize; log to stderr.")
@click.option("--lock", "lock_file", metavar="FILE",
              help="Show the aliases this lock file pins at their pinned versions.")
@click.pass_obj
def mount(obj: Any, mountpoint: str, cache_dir: str | None, cache_size: str | None,
          refresh: float | None, allow_other: bool, foreground: bool,
          lock_file: str | None) -> None:
    """Mount the store at MOUNTPOINT (returns once the mount is live); a missing MOUNTPOINT
    is created when its parent is yours."""
    if refresh is not None and refresh < 0:
        raise UsageError(f"invalid --refresh {refresh!r}: must be >= 0")
    cfg = _config(obj).with_flags(cache_dir=cache_dir, cache_size=cache_size, refresh=refresh)
    check_store_exists(cfg.store)
    mp = absolute_path(mountpoint)
    make_mountpoint(mp)
    from ..lockfile import Lock
    from .mount import MountOptions
    from .mount import mount as do_mount

    lock = Lock.load(lock_file) if lock_file else None  # read before the daemon leaves cwd
    do_mount(cfg, MountOptions(mp, allow_other=allow_other, foreground=foreground, lock=lock))


def make_mountpoint(mp: str) -> None:
    """Create a missing mountpoint directory when its parent exists and belongs to the caller
    (and say so); otherwise leave it to the mount to explain what is wrong."""
    from . import registry

    parent = os.path.dirname(mp)
    if os.path.lexists(mp) or registry.mountinfo(mp) is not None:
        return  # (a dead mount fails lstat with ENOTCONN: the mount table still lists it)
    if not os.path.isdir(parent):
        raise UsageError(f"mountpoint {mp} does not exist, nor does {parent}")
    if os.stat(parent).st_uid != os.geteuid():
        raise UsageError(f"mountpoint {mp} does not exist (and {parent} is not yours): "
                         f"create it first")
    try:
        os.mkdir(mp, 0o755)
    except FileExistsError:
        return  # made meanwhile, or a dead mount (ENOTCONN hides it from lexists)
    click.echo(f"created mountpoint {mp}", err=True)


@click.command()
@click.argument("mountpoint", type=MOUNTPOINT)
def unmount(mountpoint: str) -> None:
    """Cleanly unmount an artifactfs mount."""
    from . import registry

    registry.unmount(mountpoint)


def _daemon_stats(control: str, probe: bool) -> dict[str, Any] | None:
    from .control import request

    try:
        return request(control, {"op": "stats", "probe": probe}, timeout=10)
    except ArtifactfsError:
        return None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(obj: Any, as_json: bool) -> None:
    """Mounts of this node, their cache use and hit rate, and store reachability; dead mounts
    (their daemon was killed) with the command that clears them."""
    from . import registry

    out = []
    for rec in registry.records():
        st = _daemon_stats(rec.control, probe=True) or {}
        out.append({"mountpoint": rec.mountpoint, "pid": rec.pid, "store": rec.store,
                    "cache_dir": rec.cache_dir, "log": rec.log, "dead": False,
                    "responding": bool(st), "store_reachable": st.get("store_reachable"),
                    "cache": st.get("cache", {}), "namespace": st.get("namespace", {})})
    for d in registry.dead_mounts():
        out.append({"mountpoint": d.mountpoint, "pid": d.pid, "store": d.store, "dead": True,
                    "responding": False, "fix": d.fix})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("no artifactfs mounts")
    for m in out:
        _print_mount(m)


def _print_mount(m: dict[str, Any]) -> None:
    if m["dead"]:
        was = f"daemon pid {m['pid']} is gone" if m["pid"] else "no daemon serves it"
        click.echo(f"{m['mountpoint']}  DEAD ({was})  store {m['store']}")
        click.echo(f"  clear it: {m['fix']}")
        return
    c = m["cache"]
    reach = {True: "reachable", False: "UNREACHABLE", None: "unknown"}[m["store_reachable"]]
    click.echo(f"{m['mountpoint']}  pid {m['pid']}  store {m['store']} ({reach})")
    if not m["responding"]:
        click.echo("  daemon not responding")
        return
    where = "read in place" if c.get("in_place") else \
        f"{_size(c.get('cache_bytes', 0))} of {_size(c.get('max_bytes', 0))}"
    click.echo(f"  cache {m['cache_dir']}: {where}, hit rate "
               f"{100 * float(c.get('hit_rate', 1.0)):.1f}% "
               f"({c.get('hits', 0)} hits, {c.get('misses', 0)} misses)")


@click.group()
def cache() -> None:
    """The local content cache."""


def _blob_dir(cfg: Config) -> str:
    return os.path.join(cfg.cache_dir, "blobs")


def _du(path: str) -> tuple[int, int]:
    total = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:
                pass
    return total, files


@cache.command("info")
@click.pass_obj
def cache_info(obj: Any) -> None:
    """Size of the local content cache."""
    cfg = _config(obj)
    total, files = _du(_blob_dir(cfg))
    click.echo(f"{cfg.cache_dir}: {_size(total)} in {files} files (bound {_size(cfg.cache_size)})")


@cache.command("cleanup")
@click.argument("size")
@click.pass_obj
def cache_cleanup(obj: Any, size: str) -> None:
    """Evict least recently used cache content down to SIZE (never content in use)."""
    from . import registry
    from .control import request

    cfg = _config(obj)
    target = parse_size(size)
    users = [r for r in registry.records()
             if os.path.realpath(r.cache_dir) == os.path.realpath(cfg.cache_dir)]
    for rec in users:  # a running daemon knows what is in use: let it evict
        request(rec.control, {"op": "cleanup", "size": target})
    if not users:
        _offline_cleanup(_blob_dir(cfg), target)
    total, files = _du(_blob_dir(cfg))
    click.echo(f"{cfg.cache_dir}: {_size(total)} in {files} files")


def _offline_cleanup(directory: str, target: int) -> None:
    found = []
    for dirpath, _dirs, names in os.walk(directory):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            found.append((st.st_mtime, st.st_size, p))
    found.sort()
    total = sum(s for _, s, _ in found)
    for _, size, p in found:
        if total <= target:
            break
        try:
            os.unlink(p)
            total -= size
        except OSError:
            pass
    shutil.rmtree(os.path.join(directory, "tmp"), ignore_errors=True)


# The CLI registers every command object of this module at top level: keep only the group.
del cache_info, cache_cleanup
