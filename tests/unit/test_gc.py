"""gc keeps what live versions need and objects younger than the grace period."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from artifactfs import gc
from artifactfs.repo import Repo


def settle(store_uri: str) -> None:
    """S3 times have one-second resolution: an object written in the second a gc starts is
    kept (it may be younger than the run), so tests that expect it taken let a second pass."""
    if store_uri.startswith("s3://"):
        time.sleep(1.05)


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
    settle(store_uri)
    r = gc.collect(repo, grace_seconds=0)
    assert r.deleted >= 3  # v0's root, its big index and the part holding the old f00


def _two_versions(tmp_path: Path, store_uri: str) -> tuple[Repo, list[str]]:
    """v0 (live, with a subdirectory) and v1 (deleted: its own objects are garbage)."""
    repo = Repo(store_uri)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("kept")
    (src / "top.txt").write_text("top")
    repo.put_path(str(src), "p", "a", "dataset")
    (src / "top.txt").write_text("changed")
    repo.put_path(str(src), "p", "a", "dataset")
    repo.catalog.delete_version("p", "a", 1)
    return repo, sorted(i.key for i in repo.store.list("objects/"))


def test_gc_with_an_unreadable_live_tree_deletes_nothing(tmp_path: Path, store_uri: str) -> None:
    """Issue 11, item 2: a missing or corrupt node of a live version makes gc delete nothing
    (not even garbage), fail, and name the node and the version."""
    from artifactfs import model
    repo, before = _two_versions(tmp_path, store_uri)
    rec = repo.catalog.get_version("p", "a", 0)[0]
    sub = repo.catalog.load_node(rec.root)["sub"].oid
    for damage in ("corrupt", "missing"):
        if damage == "corrupt":
            repo.store.put(model.object_key(sub), b'{"e":[],"v":1}')
        else:
            repo.store.delete(model.object_key(sub))
        with pytest.raises(gc.GcFailed, match=f"{sub}.*p/a:v0|p/a:v0.*{sub}") as exc:
            gc.collect(Repo(store_uri), grace_seconds=0)
        assert "deleted nothing" in str(exc.value)
        after = sorted(i.key for i in repo.store.list("objects/"))
        assert after == [k for k in before if damage == "corrupt" or k != model.object_key(sub)]


def test_gc_with_a_damaged_record_or_draft_part_deletes_nothing(tmp_path: Path,
                                                                store_uri: str) -> None:
    repo, before = _two_versions(tmp_path, store_uri)
    bad = [("artifacts/p/a/versions/0000000002.json", b'{"root": 7}'),
           ("drafts/p/a/d1/parts/w1.json", b"not json")]
    for key, data in bad:
        repo.store.put(key, data)
        with pytest.raises(gc.GcFailed, match=key.rsplit("/", 1)[-1].split(".")[0]):
            gc.collect(Repo(store_uri), grace_seconds=0)
        assert sorted(i.key for i in repo.store.list("objects/")) == before
        repo.store.delete(key)
    settle(store_uri)
    assert gc.collect(Repo(store_uri), grace_seconds=0).deleted > 0  # repaired: collects


def test_gc_removes_temp_files_of_dead_writers(tmp_path: Path) -> None:
    """Issue 11, item 9: temp files of killed puts are reported and removed once old."""
    repo = Repo(str(tmp_path / "store"))
    tmp = tmp_path / "store" / ".tmp"
    (tmp / "123-dead").write_bytes(b"x" * 1000)
    (tmp / "124-fresh").write_bytes(b"y")
    old = time.time() - gc.LEFTOVER_AGE - 60
    os.utime(tmp / "123-dead", (old, old))
    r = gc.collect(repo, grace_seconds=0, dry_run=True)
    assert (r.leftovers, r.leftover_bytes) == (1, 1000) and (tmp / "123-dead").exists()
    r = gc.collect(repo, grace_seconds=0)
    assert r.leftovers == 1 and sorted(os.listdir(tmp)) == ["124-fresh"]


def test_gc_aborts_unfinished_multipart_uploads(s3_store_uri: str, monkeypatch) -> None:
    """The S3 analogue of temp files: multipart uploads never completed nor aborted."""
    from artifactfs.store.s3 import S3Store
    repo = Repo(s3_store_uri)
    store = repo.store
    assert isinstance(store, S3Store)
    full = store._key("artifacts/p/a/versions/0000000000.json")
    up = store._client.create_multipart_upload(Bucket=store.bucket, Key=full)
    monkeypatch.setattr(gc, "LEFTOVER_AGE", -3600.0)  # moto's uploads can not be made old
    r = gc.collect(repo, grace_seconds=0, dry_run=True)
    assert r.leftovers == 1
    gc.collect(repo, grace_seconds=0)
    left = store._client.list_multipart_uploads(Bucket=store.bucket).get("Uploads") or []
    assert [u["UploadId"] for u in left] == [], up["UploadId"]
