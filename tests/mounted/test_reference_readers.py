"""SPEC §7 "Who resolves a reference", with real users on a root daemon mounted --allow-other
(issue 10 item 1): a reference is served to a user only if he could read its source himself,
or inside what the operator's ``[references]`` allows — on every open, whatever is cached."""

from __future__ import annotations

import errno
import grp
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from httpserver import Behaviour, serve
from mounthelp import Mount

from artifactfs import refs
from artifactfs.model import RefInfo, ref_entry
from artifactfs.mount import registry
from artifactfs.repo import Repo
from artifactfs.store.local import LocalStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")

PROBE = """import sys
try:
    with open(sys.argv[1], "rb") as f:
        print("ok:" + f.read().hex())
except OSError as e:
    print(f"errno:{e.errno}")
"""


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="afs-refs-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def start(top: Path, name: str, store: Path, config: str = "", **env: str) -> Mount:
    cfg = top / f"config-{name}"
    (cfg / "artifactfs").mkdir(parents=True)
    (cfg / "artifactfs" / "config.toml").write_text(config)
    e = {**os.environ, "XDG_CONFIG_HOME": str(cfg), **env}
    e.pop("NOTIFY_SOCKET", None)
    m = Mount(str(top / name), str(store), str(top / f"cache-{name}"), e)
    return m


def read_as(users: Any, user: Any, path: str) -> bytes | int:
    """What ``user`` gets reading ``path``: its bytes, or the errno."""
    r = users.python(user, PROBE.replace("sys.argv[1]", repr(path)))
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    return bytes.fromhex(out[3:]) if out.startswith("ok:") else int(out.partition(":")[2])


def daemon_log(m: Mount) -> str:
    rec = registry.read(m.mp)
    assert rec is not None and rec.log
    return Path(rec.log).read_text(errors="replace")


def commit_refs(store: Path, name: str, entries: dict[str, Any]) -> None:
    Repo(LocalStore(str(store))).commit_entries("p", name, "dataset", entries)


def test_file_references_are_read_with_the_readers_authority(users: Any, top: Path) -> None:
    team = users.group()
    alice, bob, carol = users.make(), users.make(groups=[team]), users.make()
    store = top / "store"
    src = top / "src"
    for d in (store, src):
        d.mkdir()
        os.chown(d, alice.pw_uid, alice.pw_gid)
    secret = top / "secret"  # stands in for /etc/shadow: root's alone
    secret.write_bytes(b"root:$6$hash!!")
    os.chmod(secret, 0o600)
    decoy = src / "decoy"
    decoy.write_bytes(b"just a decoy..")  # same size as the secret: only authority refuses
    os.chown(decoy, alice.pw_uid, alice.pw_gid)
    bobs = top / "bob-key"  # bob's own file
    bobs.write_bytes(b"bob's key:1234")
    os.chown(bobs, bob.pw_uid, bob.pw_gid)
    os.chmod(bobs, 0o600)
    shared = top / "team.txt"
    shared.write_bytes(b"for the team only\n")
    os.chown(shared, 0, grp.getgrnam(team).gr_gid)
    os.chmod(shared, 0o640)
    # alice logs her decoy with checksum=False, as any user who can write to the store may
    r = users.python(alice, f"import artifactfs\n"
                            f"run = artifactfs.init(project='p', store={str(store)!r})\n"
                            f"a = artifactfs.Artifact('decoy', type='dataset')\n"
                            f"a.add_reference('file://{decoy}', checksum=False)\n"
                            f"run.log_artifact(a)\n")
    assert r.returncode == 0, r.stderr
    # hand-written records: a root-only file of another size; a team file, checksummed
    hidden = top / "hidden"
    hidden.write_bytes(b"x" * 4321)
    os.chmod(hidden, 0o600)
    commit_refs(store, "forged", {"hidden": ref_entry(
        RefInfo(uri=f"file://{hidden}", checksum=False), 999)})
    commit_refs(store, "team", dict(refs.expand(f"file://{shared}", "team.txt")))

    m = start(top, "mnt", store)
    try:
        m.start("--allow-other")
        v = Path(m.mp) / "p"
        # (e) the reader who may read the file gets it; bytes he (and root) read are not
        # handed to a user who may not
        assert read_as(users, bob, str(v / "team/v0/team.txt")) == b"for the team only\n"
        assert (v / "team/v0/team.txt").read_bytes() == b"for the team only\n"
        assert read_as(users, carol, str(v / "team/v0/team.txt")) == errno.EACCES
        # (a) the decoy swapped for a link to a root-only file: EACCES, never its bytes
        assert read_as(users, bob, str(v / "decoy/v0/decoy")) == b"just a decoy.."
        decoy.unlink()
        os.symlink(secret, decoy)
        os.lchown(decoy, alice.pw_uid, alice.pw_gid)
        for u in (alice, bob, carol):
            assert read_as(users, u, str(v / "decoy/v0/decoy")) == errno.EACCES
        # ... or for a link to the reader's own file: alice's link is not followed for bob
        decoy.unlink()
        os.symlink(bobs, decoy)
        os.lchown(decoy, alice.pw_uid, alice.pw_gid)
        assert read_as(users, bob, str(v / "decoy/v0/decoy")) == errno.EACCES
        (top / "bob-got").mkdir()
        os.chown(top / "bob-got", bob.pw_uid, bob.pw_gid)
        got = users.cli(bob, "--store", str(store), "get", "p/decoy", "--root",
                        str(top / "bob-got"))
        assert got.returncode == 1 and got.stderr.startswith("error:"), got.stderr
        assert "symbolic link" in got.stderr and not (top / "bob-got" / "decoy").exists()
        # (b) a forged record naming a root-only file: EACCES, and the log tells no size
        assert read_as(users, carol, str(v / "forged/v0/hidden")) == errno.EACCES
        # ... nor through a draft of it: reading its base bytes, or copying them up to write
        draft = f"{m.mp}/drafts/p/forged/c1"
        r = users.python(carol, f"import os\nos.makedirs({draft!r})\nout = []\n"
                                f"for mode in ('rb', 'r+b'):\n"
                                f"    try:\n"
                                f"        open({draft!r} + '/hidden', mode).read()\n"
                                f"        out.append('read')\n"
                                f"    except OSError as e:\n"
                                f"        out.append(e.errno)\n"
                                f"print(out)\n")
        assert r.stdout.strip() == f"[{errno.EACCES}, {errno.EACCES}]", r.stdout + r.stderr
        log = daemon_log(m)
        assert f"refused a reference to uid {carol.pw_uid} ({carol.pw_name}): " in log
        assert f"file://{hidden}" in log and "4321" not in log
    finally:
        m.cleanup()


def test_remote_references_only_where_the_operator_allows(users: Any, top: Path,
                                                         s3_bucket: str) -> None:
    dave = users.make()
    store = top / "store"
    store.mkdir()
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="data/x.bin", Body=b"from s3")
    web = Behaviour()
    web.files["/w.txt"] = b"from a loopback service"
    with serve(web) as base:
        commit_refs(store, "remote", {
            **dict(refs.expand(f"s3://{s3_bucket}/data/x.bin", "x.bin")),
            **dict(refs.expand(f"{base}/w.txt", "w.txt"))})
        closed = start(top, "closed", store)
        allowed = f"[references]\nbuckets = [\"s3://{s3_bucket}\"]\n" \
                  f"private_hosts = [\"127.0.0.1\"]\n"
        opened = start(top, "opened", store, allowed)
        try:
            closed.start("--allow-other")
            opened.start("--allow-other")
            before = len(web.requests)
            for f in ("x.bin", "w.txt"):
                assert read_as(users, dave, f"{closed.mp}/p/remote/v0/{f}") == errno.EACCES
            assert len(web.requests) == before  # no request ever left for the loopback
            assert read_as(users, dave, f"{opened.mp}/p/remote/v0/x.bin") == b"from s3"
            assert read_as(users, dave, f"{opened.mp}/p/remote/v0/w.txt") == \
                b"from a loopback service"
            log = daemon_log(closed)
            assert f"refused a reference to uid {dave.pw_uid}" in log
            assert "is not one of the buckets" in log and "127.0.0.1" in log
        finally:
            closed.cleanup()
            opened.cleanup()
