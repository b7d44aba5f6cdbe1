#!/bin/sh
# Make `/etc/fstab` lines of type fuse.artifactfs work:
#   /srv/artifactfs/store  /artifacts  fuse.artifactfs  _netdev,allow_other  0 0
# mount(8) looks for /sbin/mount.fuse.artifactfs; point it at the mount.artifactfs script.
set -eu
helper=$(command -v mount.artifactfs || true)
[ -n "$helper" ] || { echo "mount.artifactfs is not on PATH (pip install artifactfs)" >&2; exit 1; }
ln -sf "$helper" /sbin/mount.fuse.artifactfs
ln -sf "$helper" /sbin/mount.artifactfs
echo "installed /sbin/mount.fuse.artifactfs -> $helper"
