"""``mount.artifactfs STORE MOUNTPOINT [-o OPTIONS]``: the mount(8) helper behind fstab lines

    /srv/store  /artifacts  fuse.artifactfs  _netdev,allow_other  0 0

mount(8) runs ``/sbin/mount.fuse.artifactfs`` (a symlink to this script, made by
systemd/install-mount-helper.sh; see docs/mount.md) with the fstab source, the mountpoint and
``-o`` options, and expects it to return once the mount is live: we daemonize exactly like
``artifactfs mount``.  This form is this script's alone: ``artifactfs`` itself never reads
``STORE MOUNT`` as a mount request (a typo there must not mount anything).  A directory store
must exist (a typo in fstab must not serve a new empty store), the default store excepted.  Options understood:
``allow_other``, ``cache_dir=DIR``, ``cache_size=SIZE``, ``refresh=SEC``, ``foreground``,
``config=FILE``; mount(8)'s own options (``_netdev``, ``defaults``, ``x-*``, ``noauto``,
``nofail``, ``user``, ``rw``, ``dev``, ``suid``, …) are ignored.
"""

from __future__ import annotations

import sys

from .. import config as config_mod
from ..errors import ArtifactfsError, UsageError

IGNORED = {"defaults", "_netdev", "noauto", "auto", "nofail", "user", "users", "nouser", "owner",
           "rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
           "relatime", "async", "sync", "default_permissions"}


def parse_args(argv: list[str]) -> tuple[str, str, dict[str, str]]:
    """(store, mountpoint, options) from ``STORE MOUNT [-o a,b=c] [-s -f -n -v]``."""
    pos: list[str] = []
    opts: dict[str, str] = {}
    it = iter(argv)
    for a in it:
        if a == "-o":
            raw = next(it, None)
            if raw is None:
                raise UsageError("-o needs an option list")
            for item in raw.split(","):
                if item:
                    k, _, v = item.partition("=")
                    opts[k] = v
        elif a.startswith("-o") and len(a) > 2:
            for item in a[2:].split(","):
                k, _, v = item.partition("=")
                opts[k] = v
        elif a in ("-s", "-n", "-v", "--"):
            continue
        elif a == "-t":  # mount(8) names the type when the helper's name does not
            next(it, None)
        elif a == "-f":
            opts["foreground"] = ""
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}")
        else:
            pos.append(a)
    if len(pos) != 2:
        raise UsageError("usage: mount.artifactfs STORE MOUNTPOINT [-o OPTIONS]")
    return pos[0], pos[1], opts


def run(argv: list[str]) -> None:
    store, mountpoint, opts = parse_args(argv)
    cfg = config_mod.load(opts.pop("config", None) or None)
    store = config_mod.absolute_store(store)
    config_mod.check_store_exists(store)
    flags: dict[str, object] = {"store": store}
    allow_other = foreground = False
    for k, v in opts.items():
        if k in IGNORED or k.startswith("x-") or k.startswith("comment="):
            continue
        if k == "allow_other":
            allow_other = True
        elif k == "foreground":
            foreground = True
        elif k in ("cache_dir", "cache_size"):
            flags[k] = v
        elif k == "refresh":
            try:
                flags[k] = float(v)
            except ValueError:
                raise UsageError(f"invalid refresh={v!r}") from None
        else:
            print(f"mount.artifactfs: ignoring unknown option {k}", file=sys.stderr)
    from .daemon import MountOptions, mount

    mount(cfg.with_flags(**flags), MountOptions(mountpoint, allow_other, foreground))


def main(argv: list[str] | None = None) -> None:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except ArtifactfsError as e:
        print(f"mount.artifactfs: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
