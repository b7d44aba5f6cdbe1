"""The users fixture makes real users whose groups the user database knows."""

from __future__ import annotations

import grp
import os
from typing import Any


def test_real_users_and_groups(users: Any) -> None:
    g = users.group()
    alice = users.make(groups=[g])
    bob = users.make()
    assert alice.pw_name in grp.getgrnam(g).gr_mem
    r = users.run(alice, ["id", "-Gn"])
    assert r.returncode == 0 and g in r.stdout.split(), r.stderr
    r = users.python(bob, "import os, artifactfs; print(os.getuid())")
    assert r.returncode == 0 and r.stdout.strip() == str(bob.pw_uid), r.stderr
    r = users.cli(bob, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr


def test_other_users_run_artifactfs_from_a_private_checkout(user_python: Any) -> None:
    """A checkout (or interpreter) under a 0700 home is out of other users' reach: the fixture
    then bind-mounts interpreter, checkout and site-packages under a world-readable directory.
    Forced here, so that way is proven wherever the suite runs, not only under such a home."""
    from users import Users
    from users import user_python as make

    with make(shared=True) as up:
        assert len(up.mounts) == 3 and all(m.startswith("/tmp/") for m in up.mounts)
        users = Users(up)
        try:
            u = users.make()
            r = users.cli(u, "--version")
            assert r.returncode == 0 and "version" in r.stdout, r.stderr
        finally:
            users.cleanup()
    assert not any(os.path.exists(m) for m in up.mounts)
