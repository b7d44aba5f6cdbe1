"""The pieces of SPEC §7 "Who resolves a reference": the path walk that can not be redirected
(localfs), acting as another user in one thread (identity), the network policy (netpolicy),
the gate of a mount (authority) and the ``[references]`` config table."""

from __future__ import annotations

import errno
import grp
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpserver import Behaviour, serve

from artifactfs import refs
from artifactfs.config import References, parse_references
from artifactfs.errors import PermissionDenied, ReferenceChanged, UsageError
from artifactfs.model import RefInfo, ref_entry
from artifactfs.refs import authority, file, identity, localfs
from artifactfs.refs.netpolicy import NetPolicy

ANY = lambda st: True  # noqa: E731


def test_walk_resolves_links_itself_and_keeps_to_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("inside")
    (tmp_path / "outside").write_text("outside")
    os.symlink("b/f", root / "a" / "rel")
    os.symlink(str(root / "a" / "b"), root / "abs")
    os.symlink("../outside", root / "up")
    os.symlink(str(tmp_path / "outside"), root / "away")
    os.mkfifo(root / "fifo")

    def read(path: Path, r: str = "/", trust: Any = ANY) -> str:
        fd = localfs.open_regular(str(path), trust, r)
        try:
            return os.pread(fd, 100, 0).decode()
        finally:
            os.close(fd)

    assert read(root / "a" / "rel") == "inside"
    assert read(root / "abs" / "f", str(root)) == "inside"
    assert read(root / "a" / "b" / ".." / "rel", str(root)) == "inside"
    assert read(root / "up") == "outside"  # the plain walk goes where the kernel would
    for escape in (root / "up", root / "away", root / ".." / "outside"):
        with pytest.raises(localfs.Refused):
            read(escape, str(root))
    with pytest.raises(localfs.Refused, match="owned by uid"):
        read(root / "a" / "rel", trust=lambda st: False)
    with pytest.raises(OSError) as e:
        read(root / "fifo")  # never opened for reading, so it can not block
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NotADirectoryError):
        read(root / "a" / "b" / "f" / "x")
    with pytest.raises(IsADirectoryError):
        read(root / "a")
    os.symlink("loop", root / "loop")
    with pytest.raises(OSError) as e:
        read(root / "loop")
    assert e.value.errno == errno.ELOOP


def test_unverified_references_follow_only_the_readers_and_roots_links(tmp_path: Path) -> None:
    """``get`` and the API: a reference logged with checksum=False follows no link of another
    user (one swapped in after logging); a checksummed one is verified, so it may."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a link owned by another user")
    (tmp_path / "mine").write_bytes(b"private bytes!")
    os.symlink(tmp_path / "mine", tmp_path / "theirs")
    os.lchown(tmp_path / "theirs", 4242, 4242)
    entry = ref_entry(RefInfo(uri=f"file://{tmp_path}/theirs", checksum=False), 14)
    with pytest.raises(PermissionDenied, match="symbolic link owned by uid 4242"):
        refs.read_range(entry, 0, 14)
    with pytest.raises(PermissionDenied):
        refs.download_to(entry, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    checked = dict(refs.expand(f"file://{tmp_path}/theirs", "x"))["x"]
    assert refs.read_range(checked, 0, 14) == b"private bytes!"
    os.symlink(tmp_path / "mine", tmp_path / "root-link")  # root's own link: followed
    entry = ref_entry(RefInfo(uri=f"file://{tmp_path}/root-link", checksum=False), 14)
    assert refs.read_range(entry, 0, 14) == b"private bytes!"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="afs-as-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_acting_as_a_user_changes_one_thread_only(users: Any, public_dir: Path) -> None:
    g = users.group()
    member, other = users.make(groups=[g]), users.make()
    team = public_dir / "team"
    team.write_text("team")
    os.chown(team, 0, grp.getgrnam(g).gr_gid)
    os.chmod(team, 0o640)
    got: dict[str, object] = {}
    inside, done = threading.Event(), threading.Event()

    def as_user(who: Any, key: str) -> None:
        try:
            with identity.acting_as(identity.Reader(who.pw_uid)):
                try:
                    got[key] = team.read_text()
                except PermissionError:
                    got[key] = "denied"
                inside.set()
                done.wait(10)
        finally:
            inside.set()

    t = threading.Thread(target=as_user, args=(member, "member"))
    t.start()
    inside.wait(10)
    got["root meanwhile"] = team.read_text()  # this thread kept root's rights
    done.set()
    t.join()
    assert got == {"member": "team", "root meanwhile": "team"}
    inside.clear()
    t = threading.Thread(target=as_user, args=(other, "other"))
    t.start()
    t.join()
    assert got["other"] == "denied"


def test_net_policy_allows_only_global_addresses_unless_named() -> None:
    p = NetPolicy()
    for addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "192.168.0.1",
                 "169.254.169.254", "fe80::1", "100.64.0.1", "0.0.0.0", "224.0.0.1"):
        assert not p.allowed("h", addr), addr
    assert p.allowed("h", "8.8.8.8") and p.allowed("h", "2001:4860:4860::8888")
    named = NetPolicy(["minio.internal", "10.1.0.0/16", "::1"])
    assert named.allowed("MINIO.internal.", "10.9.9.9")
    assert named.allowed("x", "10.1.2.3") and named.allowed("x", "::1")
    assert not named.allowed("x", "10.2.0.1")
    with pytest.raises(PermissionDenied, match="localhost resolves to"):
        p.check_url("http://localhost:1/x")


@pytest.fixture
def web() -> Iterator[tuple[str, Behaviour]]:
    b = Behaviour()
    b.files["/f"] = b"loopback bytes"
    with serve(b) as url:
        yield url, b


def test_http_reads_connect_only_to_checked_addresses(web: tuple[str, Behaviour]) -> None:
    base, b = web
    entry = dict(refs.expand(f"{base}/f", "f"))["f"]
    with pytest.raises(PermissionDenied):
        refs.read_range(entry, 0, 5, net=NetPolicy())
    assert [r for r in b.requests if r[0] == "GET"] == []
    assert refs.read_range(entry, 0, 8, net=NetPolicy(["127.0.0.0/8"])) == b"loopback"
    with pytest.raises(PermissionDenied):  # every connection, redirects included
        NetPolicy().create_connection(("127.0.0.1", 80))


def test_gate_of_a_shared_mount(tmp_path: Path, web: tuple[str, Behaviour]) -> None:
    base, _ = web
    roots = tmp_path / "data"
    roots.mkdir()
    (roots / "set.bin").write_bytes(b"dataset")
    (tmp_path / "secret").write_bytes(b"secret!")
    os.chmod(tmp_path / "secret", 0o600)
    os.symlink(tmp_path / "secret", roots / "out")  # leads out of the root
    gate = authority.Gate(References(file_roots=(str(roots),), buckets=("s3://ok",)),
                          shared=True)
    reader = identity.Reader(4242)

    def entry(uri: str, size: int = 7) -> Any:
        return ref_entry(RefInfo(uri=uri, checksum=False), size)

    src = gate.open(entry(f"file://{roots}/set.bin"), reader)
    assert src is not None and src.read(0, 7) == b"dataset"
    src.close()
    for refused in (f"file://{roots}/out", "s3://other/k", "gs://ok/k", f"{base}/f"):
        with pytest.raises(PermissionDenied):
            gate.open(entry(refused), reader)
    assert gate.open(entry("s3://ok/k"), reader) is None  # allowed: read through the cache
    with pytest.raises(PermissionDenied, match="no caller"):
        gate.open(entry(f"file://{roots}/set.bin"), None)
    own = authority.Gate()
    assert own.tag() == "own" and gate.tag().startswith("shared-")
    assert own.open(entry("s3://other/k"), None) is None
    with pytest.raises(ReferenceChanged):
        own.open(entry(f"file://{roots}/missing"), None)


def test_references_table_is_strict() -> None:
    r = parse_references({"file_roots": ["/data/", "/a/../b"], "buckets": ["s3://b-1", "gs://g.b/"],
                          "private_hosts": ["10.0.0.0/8", "::1", "Minio.Internal."]}, "c.toml")
    assert r == References(("/data", "/b"), ("s3://b-1", "gs://g.b"),
                           ("10.0.0.0/8", "::1/128", "minio.internal"))
    for bad, what in [({"file_root": []}, "file_root: unknown key"),
                      ({"buckets": "s3://b"}, "buckets: must be a list of strings"),
                      ({"buckets": ["s3://b/prefix"]}, "write s3://BUCKET"),
                      ({"file_roots": ["relative"]}, "not an absolute directory"),
                      ({"private_hosts": ["a b"]}, "neither a host name"),
                      ([], "must be a table")]:
        with pytest.raises(UsageError, match=what) as e:
            parse_references(bad, "c.toml")
        assert "c.toml: [references]" in str(e.value)


def test_file_source_reads_one_descriptor(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    entry = dict(refs.expand(f"file://{tmp_path}/f", "f"))["f"]
    assert entry.ref is not None
    with file.open_own(entry.ref, entry.size) as src:
        assert src.read(2, 3) == b"234"
        (tmp_path / "f").write_bytes(b"9876543210")  # rewritten under the open source
        with pytest.raises(ReferenceChanged):
            src.read(0, 10)
