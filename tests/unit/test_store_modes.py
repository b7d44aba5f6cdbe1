"""The directory store's permissions follow its root directory (issue 10 items 5 and 9)."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from artifactfs.store.local import LocalStore


def test_everything_follows_the_roots_owner_group_and_mode(tmp_path: Path) -> None:
    """A root process (umask 077) writing into a group store owned by someone else."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write into a store owned by someone else")
    root = tmp_path / "store"
    root.mkdir()
    os.chown(root, 4242, 4343)
    os.chmod(root, 0o2770)
    old = os.umask(0o077)
    try:
        s = LocalStore(str(root))
        assert s.put_if_absent("objects/sha256/ab/cdef", b"blob")
        s.cas("artifacts/p/n/versions/v0.json", b"{}", None)
        s.put("aliases/p/n/latest", b"0")
        s.put("aliases/p/n/latest", b"1")  # takes the per-key lock file
    finally:
        os.umask(old)
    seen = set()
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            seen.add((stat.S_ISDIR(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
    assert seen == {(True, 4242, 4343, 0o2770), (False, 4242, 4343, 0o660)}


def test_a_private_store_is_0750_and_an_open_one_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        LocalStore(str(tmp_path / "private"), private=True).put("records/x", b"1")
        LocalStore(str(tmp_path / "open")).put("records/x", b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "private" / "records" / "x").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "open").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "open" / "records" / "x").st_mode) == 0o644


def test_exposure_names_who_can_read_past_the_acl(tmp_path: Path) -> None:
    s = LocalStore(str(tmp_path / "s"))
    os.chmod(s.root, 0o755)
    assert s.exposure({}) is None  # no restricted project: nothing to guard
    msg = s.exposure({"secret": frozenset({"ml"})})
    assert msg is not None and "(mode 0755) can be read by every user" in msg
    assert "secret" in msg and f"chmod o-rwx {s.root}" in msg
    os.chmod(s.root, 0o750)
    group = grp.getgrgid(os.stat(s.root).st_gid).gr_name
    assert s.exposure({"secret": frozenset({group})}) is None
    os.chmod(s.root, 0o700)
    assert s.exposure({"secret": frozenset({"ml"})}) is None
