"""Hard links into drafts (docs/drafts.md "Limits"): tar, ``cp -a`` and ``rsync -aH`` of trees
with hard links succeed; each link becomes an independent copy-on-write copy, and the version
holds both paths with one stored object."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tarfile
from pathlib import Path

from mounthelp import sha256_file


def tree(root: Path) -> dict[str, tuple[int, str, bool]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = (p.stat().st_size, sha256_file(str(p)),
                                             bool(p.stat().st_mode & 0o100))
    return out


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_tar_cp_and_rsync_of_hard_links_into_drafts(cli, mounter, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("same bytes\n" * 500)
    os.link(src / "a.txt", src / "sub" / "b.txt")
    (src / "c.bin").write_bytes(os.urandom(300_000))
    os.chmod(src / "c.bin", 0o755)
    os.link(src / "c.bin", src / "sub" / "c2.bin")
    os.link(src / "c.bin", src / "c3.bin")
    tarball = tmp_path / "t.tar"
    assert run("tar", "-cf", str(tarball), "-C", str(src), ".").returncode == 0
    with tarfile.open(tarball) as t:
        assert sum(m.islnk() for m in t.getmembers()) == 3  # stored as hard links
    m = mounter(start=False)
    os.makedirs(m.store)  # a new, empty store: the artifact is made by the first commit
    m.start()
    top = Path(m.path("drafts", "ds", "links"))
    want = tree(src)
    drafts = {}
    for tool, cmd in [("tar", ["tar", "-xf", str(tarball), "-C"]),
                      ("cp", ["cp", "-a", f"{src}/."]),
                      ("rsync", ["rsync", "-aH", f"{src}/"])]:
        d = top / tool
        d.mkdir(parents=True)
        r = run(*cmd, str(d) + ("/" if tool == "rsync" else ""))
        assert r.returncode == 0, (tool, r.stderr)
        assert tree(d) == want, tool
        assert all(os.stat(d / p).st_nlink == 1 for p in want)
        drafts[tool] = d

    d = drafts["cp"]  # after the link the paths are independent files
    with open(d / "sub" / "b.txt", "a") as f:
        f.write("only b\n")
    assert (d / "a.txt").read_text() == (src / "a.txt").read_text()
    assert (d / "sub" / "b.txt").read_text().endswith("only b\n")

    label = cli("commit", str(drafts["tar"]), "--type", "dataset").stdout.split()[-1]
    assert label == "ds/links:v0"
    entries = {e["path"]: e["digest"] for e in
               json.loads(cli("ls", label, "--json").stdout)}
    assert entries["a.txt"] == entries["sub/b.txt"]
    assert entries["c.bin"] == entries["sub/c2.bin"] == entries["c3.bin"]
    store = Path(m.store)
    for digest in {entries["a.txt"], entries["c.bin"]}:  # content-addressed: stored once
        assert len(list(store.glob(f"objects/sha256/*/{digest[2:]}"))) == 1
    v0 = Path(m.path("ds", "links", "v0"))
    assert tree(v0) == want

    for a, b in [(drafts["cp"] / "a.txt", drafts["rsync"] / "x"),  # across drafts
                 (v0 / "a.txt", drafts["cp"] / "x")]:  # from a version into a draft
        try:
            os.link(a, b)
            raise AssertionError("link succeeded")
        except OSError as e:
            assert e.errno == errno.EXDEV, (a, b, e)
    try:
        os.link(drafts["cp"] / "a.txt", v0 / "x")
        raise AssertionError("link into a version succeeded")
    except OSError as e:
        assert e.errno == errno.EROFS
