"""gc keeps what live versions need and objects younger than the grace period."""

from __future__ import annotations

import os
import time
from pathlib import Path

from artifactfs import gc
from artifactfs.repo import Repo


def age_all_objects(store: Path) -> None:
    old = time.time() - 3 * 24 * 3600
    for p in (store / "objects").rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))


def test_gc_removes_only_unreachable_old_objects(tmp_path: Path) -> None:
    store = tmp_path / "store"
    repo = Repo(str(store))
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("keep")
    (src / "gone.bin").write_bytes(os.urandom(9 * 1024 * 1024))  # two chunks
    repo.put_path(str(src), "p", "a", "dataset")
    (src / "gone.bin").unlink()
    repo.put_path(str(src), "p", "a", "dataset")
    repo.catalog.delete_version("p", "a", 0)
    before = sum(1 for _ in repo.store.list("objects/"))
    r = gc.collect(repo, grace_seconds=3600, dry_run=True)
    assert r.deleted == 0  # everything is young
    age_all_objects(store)
    r = gc.collect(repo, grace_seconds=3600, dry_run=True)
    assert r.deleted == 0  # v0 was deleted less than the grace period ago
    r = gc.collect(repo, grace_seconds=0)
    assert r.deleted >= 3  # two chunks and v0's root node
    assert sum(1 for _ in repo.store.list("objects/")) == before - r.deleted
    out = tmp_path / "out"
    repo.download(repo.resolve("p/a"), str(out))
    assert (out / "keep.txt").read_text() == "keep"


def test_gc_keeps_the_parts_of_split_directories(tmp_path: Path, monkeypatch, store_uri) -> None:
    """Split directories on both stores: parts read back by a fresh repo, shared between
    versions, kept by gc while a version needs them."""
    from artifactfs import model
    monkeypatch.setattr(model, "SPLIT_AT", 8)
    monkeypatch.setattr(model, "PART_AVG", 3)
    repo = Repo(store_uri)
    src = tmp_path / "src"
    (src / "big").mkdir(parents=True)
    for i in range(40):
        (src / "big" / f"f{i:02d}").write_text(f"file {i}")
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    big = repo.catalog.load_node(rec.root)["big"]
    parts = repo.catalog.load_index(big.oid)
    assert parts is not None and len(parts) > 2
    (src / "big" / "f00").write_text("changed")  # a new version sharing most parts
    rec2, _ = repo.put_path(str(src), "p", "a", "dataset")
    r = gc.collect(repo, grace_seconds=0)
    assert r.deleted == 0 and not r.problems  # both versions are live: every part is kept
    fresh = Repo(store_uri)  # no node cache: everything read back from the store
    for version in (rec, rec2):
        out = tmp_path / f"out{version.version}"
        fresh.download(fresh.resolve(f"p/a:v{version.version}"), str(out))
        assert sorted(os.listdir(out / "big")) == [f"f{i:02d}" for i in range(40)]
    assert (tmp_path / "out1" / "big" / "f00").read_text() == "changed"
    repo.catalog.delete_version("p", "a", 0)
    r = gc.collect(repo, grace_seconds=0)
    assert r.deleted >= 3  # v0's root, its big index and the part holding the old f00
