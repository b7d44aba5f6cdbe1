"""Directory store permissions on a shared node (issue 10 items 5 and 9): the store's own file
modes are its only guard, so a store made while the config restricts projects is not
readable by others, the daemon warns when the store it serves is; and a root daemon or CLI
writing into a group-shared store keeps it usable by the group."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mounthelp import Mount

from artifactfs.mount import registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="afs-perm-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def root_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **(env or {})}
    e.pop("NOTIFY_SOCKET", None)
    return subprocess.run([sys.executable, "-m", "artifactfs", *args], env=e, text=True,
                          capture_output=True, timeout=120, check=False)


def modes(store: Path) -> set[tuple[str, int, int, int]]:
    """(kind, uid, gid, mode) of everything below the store root."""
    out = set()
    for dirpath, dirs, files in os.walk(store):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out.add(("d" if stat.S_ISDIR(st.st_mode) else "f", st.st_uid, st.st_gid,
                     stat.S_IMODE(st.st_mode)))
    return out


def test_a_store_made_with_acls_is_not_readable_by_others(users: Any, top: Path) -> None:
    team = users.group()
    outsider = users.make()
    config = top / "config.toml"
    config.write_text(f'[projects.secret]\nreaders = ["{team}"]\n')
    (top / "src").mkdir()
    (top / "src" / "weights.bin").write_bytes(b"secret weights")
    store = top / "store"
    r = root_cli("--config", str(config), "--store", str(store), "put", str(top / "src"),
                 "--name", "secret/model", "--type", "model")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o750
    assert {m for k, _, _, m in modes(store) if k == "f"} == {0o640}
    obj = next(p for p in (store / "objects").rglob("*") if p.is_file())
    out = top / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    for args in (["get", "secret/model", "--root", str(out)], ["info", "secret/model", "--json"]):
        r = users.cli(outsider, "--store", str(store), *args)
        assert r.returncode == 1 and r.stderr.startswith("error: no permission to read the "
                                                         f"store {store}"), r.stderr
    r = users.run(outsider, ["cat", str(obj)])
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert not any(out.iterdir())


def test_the_daemon_warns_when_the_acl_does_not_guard_its_store(users: Any, top: Path) -> None:
    team = users.group()
    store = top / "store"
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    cfg = top / "cfg"
    (cfg / "artifactfs").mkdir(parents=True)
    (cfg / "artifactfs" / "config.toml").write_text(f'[projects.secret]\nreaders = ["{team}"]\n')
    env = {**os.environ, "XDG_CONFIG_HOME": str(cfg)}
    env.pop("NOTIFY_SOCKET", None)
    m = Mount(str(top / "mnt"), str(store), str(top / "cache"), env)
    try:
        m.start("--allow-other")
        rec = registry.read(m.mp)
        assert rec is not None
        log = Path(rec.log).read_text()
        assert "WARNING" in log and f"the store {store} (mode 0755) can be read by every user" \
            in log
        status = m.run("status")
        assert status.returncode == 0 and "WARNING: the store" in status.stdout, status.stdout
    finally:
        m.cleanup()


def test_a_root_daemon_keeps_a_group_store_usable_by_the_group(users: Any, top: Path) -> None:
    team = users.group()
    gid = grp.getgrnam(team).gr_gid
    alice, bob = users.make(groups=[team]), users.make(groups=[team])
    store = top / "store"
    store.mkdir()
    os.chown(store, alice.pw_uid, gid)
    os.chmod(store, 0o2770)
    src = top / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    os.chmod(src / "a.txt", 0o644)
    # root writes first: a CLI put, then a commit through a root daemon
    r = root_cli("--store", str(store), "put", str(src), "--name", "p/data", "--type", "dataset",
                 "--alias", "best", env={"XDG_CONFIG_HOME": str(top / "noconfig")})
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "XDG_CONFIG_HOME": str(top / "noconfig")}
    env.pop("NOTIFY_SOCKET", None)
    m = Mount(str(top / "mnt"), str(store), str(top / "cache"), env)
    try:
        m.start()
        draft = Path(m.mp) / "drafts" / "p" / "data" / "d1"
        draft.mkdir()
        (draft / "b.txt").write_text("b\n")
        r = m.run("commit", str(draft))
        assert r.returncode == 0 and r.stdout.split()[-1] == "p/data:v1", r.stderr
    finally:
        m.cleanup()
    assert modes(store) <= {("d", alice.pw_uid, gid, 0o2770), ("f", alice.pw_uid, gid, 0o660)}
    # ... so the group keeps working in it
    (top / "bsrc").mkdir(mode=0o755)
    (top / "bsrc" / "c.txt").write_text("c\n")
    os.chmod(top / "bsrc" / "c.txt", 0o644)
    r = users.cli(bob, "--store", str(store), "put", str(top / "bsrc"), "--name", "p/data",
                  "--type", "dataset", "--alias", "best")
    assert r.returncode == 0 and r.stdout.split()[-1] == "p/data:v2", r.stderr
    # a directory the group may not write: the error names it, not a temp file in it
    os.chown(store / ".tmp", 0, 0)
    os.chmod(store / ".tmp", 0o755)
    (top / "bsrc" / "d.txt").write_text("d\n")
    r = users.cli(bob, "--store", str(store), "put", str(top / "bsrc"), "--name", "p/data",
                  "--type", "dataset")
    assert r.returncode == 1, r.stderr
    assert f"{store}/.tmp (owner root, group root, mode 0755) refuses uid {bob.pw_uid}" \
        in r.stderr and ".tmp/" not in r.stderr
