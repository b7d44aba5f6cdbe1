"""The users fixture makes real users whose groups the user database knows."""

from __future__ import annotations

import grp
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
