"""``artifactfs mount``, ``unmount``, ``status`` and ``cache``: click commands over mount/daemon.py.

Imported by every CLI run (the CLI registers every command found here), so this module imports
nothing heavy at import time: pyfuse3, trio and lmdb are loaded only by the command that needs
them.  The context object is the CLI's (a ``Config``, or an object with ``.config``).

What is subtle: paths are made absolute and checked here, before ``mount`` forks a daemon that
changes directory to ``/``; ``cache info``/``cleanup`` find caches through the mount registry
(a mount may use any ``--cache-dir``), and content a running daemon caches is evicted by that
daemon (it knows what is in use), never from under it.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import click

from ..clikit import fmt_size as _size
from ..config import Config, absolute_path, check_store_exists, parse_size
from ..errors import ArtifactfsError, UsageError
from ..safetext import escape


def _config(obj: Any) -> Config:
    cfg = getattr(obj, "config", obj)
    if not isinstance(cfg, Config):
        from .. import config as config_mod

        cfg = config_mod.load()
    return cfg


# not readable=True: a mount whose daemon was killed fails access() (ENOTCONN) while the kernel
# still answers stat() from cached attributes, and mount/unmount must reach their recovery
MOUNTPOINT = click.Path(file_okay=False, readable=False)  # (also: completes directories)


@click.command()
@click.argument("mountpoint", type=MOUNTPOINT)
@click.option("--cache-dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Local cache directory.")
@click.option("--cache-size", metavar="SIZE", help="Cache bound, e.g. 50GiB.")
@click.option("--refresh", type=float, metavar="SEC",
              help="Seconds before version and alias lists are re-read (default 10).")
@click.option("--allow-other", is_flag=True, help="Let other users use the mount.")
@click.option("--foreground", "-f", is_flag=True, help="Do not daemonize; log to stderr.")
@click.option("--lock", "lock_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Show the aliases this lock file pins at their pinned versions.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the mount's record (mountpoint, pid, store, cache_dir, log).")
@click.pass_obj
def mount(obj: Any, mountpoint: str, cache_dir: str | None, cache_size: str | None,
          refresh: float | None, allow_other: bool, foreground: bool,
          lock_file: str | None, as_json: bool) -> None:
    """Mount the store at MOUNTPOINT (returns once the mount is live); a missing MOUNTPOINT
    is created when its parent is yours."""
    if refresh is not None and refresh < 0:
        raise UsageError(f"invalid --refresh {refresh!r}: must be >= 0")
    cfg = _config(obj).with_flags(cache_dir=cache_dir, cache_size=cache_size, refresh=refresh)
    check_store_exists(cfg.store)
    mp = absolute_path(mountpoint)
    make_mountpoint(mp)
    from ..lockfile import Lock
    from .daemon import MountOptions
    from .daemon import mount as do_mount

    lock = Lock.load(lock_file) if lock_file else None  # read before the daemon leaves cwd
    opts = MountOptions(mp, allow_other=allow_other, foreground=foreground, lock=lock)
    do_mount(cfg, opts)
    if as_json and not foreground:
        from . import registry

        rec = registry.read(opts.mountpoint)
        if rec is not None:
            click.echo(json.dumps({"mountpoint": rec.mountpoint, "pid": rec.pid,
                                   "store": rec.store, "cache_dir": rec.cache_dir,
                                   "log": rec.log}, indent=2))


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
                    "cache": st.get("cache", {}), "namespace": st.get("namespace", {}),
                    "store_warning": st.get("store_warning")})
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
        click.echo(escape(f"{m['mountpoint']}  DEAD ({was})  store {m['store']}"))
        click.echo(escape(f"  clear it: {m['fix']}"))
        return
    c = m["cache"]
    reach = {True: "reachable", False: "UNREACHABLE", None: "unknown"}[m["store_reachable"]]
    click.echo(escape(f"{m['mountpoint']}  pid {m['pid']}  store {m['store']} ({reach})"))
    if m.get("store_warning"):
        click.echo(escape(f"  WARNING: {m['store_warning']}"))
    if not m["responding"]:
        click.echo("  daemon not responding")
        return
    where = "read in place" if c.get("in_place") else \
        f"{_size(c.get('cache_bytes', 0))} of {_size(c.get('max_bytes', 0))}"
    click.echo(escape(f"  cache {m['cache_dir']}: {where}, hit rate "
                      f"{100 * float(c.get('hit_rate', 1.0)):.1f}% "
                      f"({c.get('hits', 0)} hits, {c.get('misses', 0)} misses)"))


@click.group()
def cache() -> None:
    """The local content cache."""


def _blob_dir(cache_dir: str) -> str:
    return os.path.join(cache_dir, "blobs")


def _du(path: str) -> tuple[int, int]:
    """Bytes and files of cached content (dot files are the cache's markers, not content)."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            if n.startswith("."):
                continue
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def _caches(cfg: Config, cache_dir: str | None) -> list[dict[str, Any]]:
    """The caches ``cache`` looks at: ``--cache-dir``, else those of this node's running
    mounts and the configured one (if it holds anything), each with the mounts using it."""
    from . import registry

    found: dict[str, dict[str, Any]] = {}
    recs = registry.records()
    dirs = [absolute_path(cache_dir)] if cache_dir else [r.cache_dir for r in recs]
    if not cache_dir and (not dirs or os.path.isdir(_blob_dir(cfg.cache_dir))):
        dirs.append(cfg.cache_dir)
    for d in dirs:
        key = os.path.realpath(d)
        if key not in found:
            users = [r for r in recs if os.path.realpath(r.cache_dir) == key]
            found[key] = {"cache_dir": d, "mounts": [r.mountpoint for r in users],
                          "max_bytes": cfg.cache_size, "_controls": [r.control for r in users]}
    return list(found.values())


def _measure(caches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``cache --json`` shape: bytes and files on disk, the bound (a running daemon's)."""
    out = []
    for c in caches:
        for control in c["_controls"]:
            st = (_daemon_stats(control, probe=False) or {}).get("cache", {})
            c["max_bytes"] = int(st.get("max_bytes", c["max_bytes"]))
        total, files = _du(_blob_dir(c["cache_dir"]))
        out.append({"cache_dir": c["cache_dir"], "bytes": total, "files": files,
                    "max_bytes": c["max_bytes"], "mounts": c["mounts"]})
    return out


def _show(caches: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(caches, indent=2))
        return
    for c in caches:
        used = f", used by {', '.join(c['mounts'])}" if c["mounts"] else ""
        click.echo(f"{c['cache_dir']}: {_size(c['bytes'])} in {c['files']} files "
                   f"(bound {_size(c['max_bytes'])}){used}")


CACHE_DIR = click.option("--cache-dir", type=click.Path(file_okay=False), metavar="DIR",
                         help="This cache (default: the running mounts' and the configured).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/cli.md).")


@cache.command("info")
@CACHE_DIR
@JSON
@click.pass_obj
def cache_info(obj: Any, cache_dir: str | None, as_json: bool) -> None:
    """Size of the local content caches: the running mounts' and the configured one."""
    _show(_measure(_caches(_config(obj), cache_dir)), as_json)


@cache.command("cleanup")
@click.argument("size")
@CACHE_DIR
@JSON
@click.pass_obj
def cache_cleanup(obj: Any, size: str, cache_dir: str | None, as_json: bool) -> None:
    """Evict least recently used content of each cache down to SIZE (never content in use:
    a running mount evicts its own)."""
    from .control import request

    target = parse_size(size)
    caches = _caches(_config(obj), cache_dir)
    for c in caches:
        for control in c["_controls"]:  # a running daemon knows what is in use: let it evict
            request(control, {"op": "cleanup", "size": target})
        if not c["_controls"]:
            _offline_cleanup(_blob_dir(c["cache_dir"]), target)
    _show(_measure(caches), as_json)


def _offline_cleanup(directory: str, target: int) -> None:
    found = []
    for dirpath, _dirs, names in os.walk(directory):
        for n in names:
            if n.startswith("."):  # a marker (e.g. refs/.rules), not content
                continue
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
