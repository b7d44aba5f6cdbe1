"""The CLI of issue 14: get's download cache, verify, diff, digest, ls PROJECT, tags and
search, registry link/unlink; and the registry in the mount (MOUNT/registry/C/vN serves the
source's content, ls --json/xattrs say which digest is which).  Directory store and S3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clidocs import check_json

MiB = 1 << 20


def cli(store: str, cache: Path, *args: str, ok: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ARTIFACTFS_STORE=store, ARTIFACTFS_CACHE_DIR=str(cache))
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True,
                       text=True, env=env, cwd=cwd, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "d").mkdir(parents=True)
    (s / "d" / "a.txt").write_text("a")
    (s / "big.bin").write_bytes(os.urandom(9 * MiB))
    old = 1_600_000_000 * 10**9  # settled files (statcache.RACY_NS): a dataset made earlier
    for p in (s / "d" / "a.txt", s / "big.bin"):
        os.utime(p, ns=(old, old))
    return s


def test_get_verify_diff_digest(tmp_path: Path, src: Path, store_uri: str) -> None:
    cache = tmp_path / "cache"
    cli(store_uri, cache, "put", str(src), "--name", "p/a", "--type", "dataset")
    root = tmp_path / "root"
    p = cli(store_uri, cache, "get", "p/a", "--root", str(root))
    assert "kept 0 files" in p.stderr  # (big.bin is copied from src if put recorded it)
    p = cli(store_uri, cache, "get", "p/a", "--root", str(root))
    assert "fetched 0 B" in p.stderr and "kept 2 files" in p.stderr
    assert cli(store_uri, cache, "verify", str(root)).stdout.startswith("ok: ")
    (root / "d" / "a.txt").write_text("A")
    p = cli(store_uri, cache, "verify", str(root), "p/a:v0", ok=False)
    assert p.returncode == 1 and "changed: d/a.txt" in p.stdout
    assert p.stderr.startswith("error: ") and "1 changed" in p.stderr
    doc = json.loads(cli(store_uri, cache, "verify", str(root), "--json", ok=False).stdout)
    check_json("verify", doc)
    assert doc["changed"] == ["d/a.txt"] and doc["version"] == "p/a:v0" and not doc["ok"]
    os.rename(src / "big.bin", src / "d" / "big.bin")
    (src / "new.txt").write_text("n")
    cli(store_uri, cache, "put", str(src), "--name", "p/a", "--type", "dataset")
    assert cli(store_uri, cache, "diff", "p/a:v0", "p/a:v1").stdout.splitlines() == [
        "R big.bin -> d/big.bin", "A new.txt"]
    doc = json.loads(cli(store_uri, cache, "diff", "p/a:v0", "p/a", "--json").stdout)
    check_json("diff", doc)
    assert doc["renamed"][0]["from"] == "big.bin" and doc["added"][0]["path"] == "new.txt"
    root1 = tmp_path / "root1"
    p = cli(store_uri, cache, "get", "p/a:v1", "--root", str(root1))
    assert "fetched 2 B" in p.stderr  # new.txt and d/a.txt (changed in root); big.bin: copied
    digests = json.loads(cli(store_uri, cache, "digest", str(root1 / "d" / "big.bin"),
                             "--json").stdout)
    check_json("digest", digests)
    big = digests[0]
    docs = json.loads(cli(store_uri, cache, "ls", "p/a", "--json").stdout)
    check_json("ls", docs)
    listed = {d["path"]: d for d in docs}
    assert big["digest"] == listed["d/big.bin"]["digest"]
    assert listed["d/big.bin"]["digest_kind"] == big["digest_kind"] == "sha256-chunks"
    assert big["sha256"] == hashlib.sha256((root1 / "d" / "big.bin").read_bytes()).hexdigest()
    assert "sha256" not in listed["d/big.bin"]
    assert listed["new.txt"]["sha256"] == hashlib.sha256(b"n").hexdigest()
    p = cli(store_uri, cache, "get", "p/a:v1", "--root", str(root1), "--skip-cache")
    assert "fetched 9.0 MiB" in p.stderr
    doc = json.loads(cli(store_uri, cache, "get", "p/a:v1", "--root", str(root1), "--json")
                     .stdout)
    check_json("get", doc)
    assert (doc["fetched_bytes"], doc["kept_files"]) == (0, 3)


def test_ls_project_tags_search_and_links(tmp_path: Path, src: Path, store_uri: str) -> None:
    cache = tmp_path / "cache"
    cli(store_uri, cache, "put", str(src), "--name", "p/a", "--type", "model")
    cli(store_uri, cache, "put", str(src / "d"), "--name", "p/b", "--type", "dataset")
    assert cli(store_uri, cache, "ls", "p").stdout.splitlines() == [
        "model        p/a:v0", "dataset      p/b:v0"]
    docs = json.loads(cli(store_uri, cache, "ls", "p", "--json").stdout)
    assert [(d["name"], d["type"], d["latest"]) for d in docs] == [("a", "model", "v0"),
                                                                   ("b", "dataset", "v0")]
    check_json("tag add", json.loads(cli(store_uri, cache, "tag", "add", "p/a:v0", "gold",
                                         "eu", "--json").stdout))
    cli(store_uri, cache, "tag", "add", "p/b", "gold")
    cli(store_uri, cache, "tag", "rm", "p/a:v0", "eu")
    doc = json.loads(cli(store_uri, cache, "search", "--tag", "gold", "--json").stdout)
    check_json("search", doc)
    assert [v["ref"] for v in doc["versions"]] == ["p/a:v0"]
    assert [a["name"] for a in doc["artifacts"]] == ["b"]
    assert cli(store_uri, cache, "search", "--tag", "eu").stdout == ""
    p = cli(store_uri, cache, "link", "p/a", "wandb-registry-model/prod", "--alias", "live")
    assert p.stdout.strip() == "registry/prod:v0"
    assert "model        registry/prod:v0" in cli(store_uri, cache, "ls", "registry").stdout
    check_json("link", json.loads(cli(store_uri, cache, "link", "p/a", "prod", "--json").stdout))
    assert cli(store_uri, cache, "diff", "p/a:v0", "registry/prod:live").stderr.endswith(
        "have the same content\n")
    p = cli(store_uri, cache, "put", str(src), "--name", "registry/x", "--type", "model",
            ok=False)
    assert p.returncode == 1 and "link" in p.stderr
    check_json("tag rm", json.loads(cli(store_uri, cache, "tag", "rm", "p/b", "gold",
                                        "--json").stdout))
    cli(store_uri, cache, "tag", "add", "p/b", "gold")
    check_json("unlink", json.loads(cli(store_uri, cache, "unlink", "registry/prod:v0",
                                        "--json").stdout))
    cli(store_uri, cache, "link", "p/a", "prod", "--alias", "live")
    assert "unlinked registry/prod:v1 (was p/a:v0)" in cli(store_uri, cache, "unlink",
                                                          "registry/prod:live").stdout
    assert cli(store_uri, cache, "ls", "registry").stdout == "model        registry/prod:-\n"


@pytest.mark.mounted
def test_registry_and_digests_in_the_mount(tmp_path: Path, src: Path, mount) -> None:  # type: ignore[no-untyped-def]
    store = str(tmp_path / "store")
    cache = tmp_path / "cache"
    cli(store, cache, "put", str(src), "--name", "p/a", "--type", "model")
    cli(store, cache, "link", "p/a:v0", "prod")
    mnt = mount(store, tmp_path / "mnt")
    assert sorted(os.listdir(mnt / "registry" / "prod")) == ["latest", "v0"]
    served = mnt / "registry" / "prod" / "v0" / "big.bin"
    assert served.read_bytes() == (src / "big.bin").read_bytes()
    assert os.getxattr(mnt / "registry" / "prod" / "v0", "user.artifactfs.version") == \
        b"registry/prod:v0"
    assert os.getxattr(served, "user.artifactfs.digest_kind") == b"sha256-chunks"
    small = mnt / "p" / "a" / "v0" / "d" / "a.txt"
    assert os.getxattr(small, "user.artifactfs.sha256") == hashlib.sha256(b"a").hexdigest(
        ).encode() == os.getxattr(small, "user.artifactfs.digest")
    assert cli(store, cache, "verify", str(mnt / "registry" / "prod" / "v0"), "p/a:v0"
               ).stdout.startswith("ok: ")
