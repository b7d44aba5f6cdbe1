"""The download cache (dlcache.py): a re-get into a complete root fetches nothing, a version
sharing most files fetches only the rest (by digest, not by name), and nothing found on the
node is used without being verified.  On the directory store and on S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactfs import fetch, model, statcache
from artifactfs.dlcache import Reuse
from artifactfs.errors import IntegrityError
from artifactfs.repo import Repo
from artifactfs.statcache import StatCache

MiB = 1 << 20


@pytest.fixture(autouse=True)
def settled_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written a moment ago count as settled (statcache.RACY_NS)."""
    monkeypatch.setattr(statcache, "RACY_NS", -10**18)


def make(src: Path, n: int = 10, size: int = 64 * 1024) -> Path:
    (src / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (src / "sub" / f"f{i}.bin").write_bytes(os.urandom(size))
    (src / "big.bin").write_bytes(os.urandom(9 * MiB))  # two chunks
    return src


def reuse(tmp: Path, blobs: Path | None = None) -> Reuse:
    return Reuse(StatCache(str(tmp / "cache" / "hints.db")), str(blobs) if blobs else None)


def get(repo: Repo, ref: str, root: Path, r: Reuse) -> Reuse:
    r.counts.__init__()  # type: ignore[misc]
    repo.download(repo.resolve(ref), str(root), reuse=r)
    return r


def same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / p).read_bytes() == (b / p).read_bytes() for p in fa)


def test_reget_into_a_complete_root_fetches_nothing(tmp_path: Path, store_uri: str) -> None:
    src = make(tmp_path / "src")
    repo = Repo(store_uri)
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    r = reuse(tmp_path)
    get(repo, "p/a", tmp_path / "out", r)
    assert r.counts.fetched == rec.size and r.counts.files_written == 11
    get(repo, "p/a", tmp_path / "out", r)
    assert (r.counts.fetched, r.counts.copied, r.counts.files_kept) == (0, 0, 11)
    assert r.counts.kept == rec.size and same_tree(src, tmp_path / "out")


def test_a_version_sharing_most_files_fetches_only_the_rest(tmp_path: Path,
                                                            store_uri: str) -> None:
    """v1 renames one file, changes one and adds one; it goes to another root: only the
    changed and added bytes are fetched, the rest is copied from the first root."""
    src = make(tmp_path / "src")
    repo = Repo(store_uri)
    repo.put_path(str(src), "p", "a", "dataset")
    r = reuse(tmp_path)
    get(repo, "p/a:v0", tmp_path / "v0", r)
    os.rename(src / "sub" / "f0.bin", src / "sub" / "moved.bin")
    (src / "sub" / "f1.bin").write_bytes(os.urandom(64 * 1024))
    (src / "new.bin").write_bytes(os.urandom(64 * 1024))
    rec1, _ = repo.put_path(str(src), "p", "a", "dataset")
    get(repo, "p/a:v1", tmp_path / "v1", r)
    assert r.counts.fetched == 2 * 64 * 1024
    assert r.counts.copied == rec1.size - 2 * 64 * 1024
    assert same_tree(src, tmp_path / "v1")


def test_files_in_the_root_without_records_are_hashed_not_fetched(tmp_path: Path) -> None:
    src = make(tmp_path / "src", 3)
    repo = Repo(str(tmp_path / "store"))
    repo.put_path(str(src), "p", "a", "dataset")
    import shutil
    shutil.copytree(src, tmp_path / "out")  # a copy made by other tools: no records
    (tmp_path / "out" / "sub" / "f1.bin").write_bytes(b"x" * (64 * 1024))  # same size, wrong
    r = get(repo, "p/a", tmp_path / "out", reuse(tmp_path))
    assert r.counts.files_kept == 3 and r.counts.fetched == 64 * 1024
    assert same_tree(src, tmp_path / "out")


def test_a_changed_file_is_fetched_again_even_with_its_old_stat(tmp_path: Path) -> None:
    """The record names the old stat; a write changes ctime (and here mtime is put back)."""
    src = make(tmp_path / "src", 2)
    repo = Repo(str(tmp_path / "store"))
    repo.put_path(str(src), "p", "a", "dataset")
    r = reuse(tmp_path)
    get(repo, "p/a", tmp_path / "out", r)
    f = tmp_path / "out" / "big.bin"
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.seek(MiB)
        fh.write(b"tampered")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    get(repo, "p/a", tmp_path / "out", r)
    assert r.counts.files_kept == 2 and r.counts.files_written == 1
    # the good chunk of the old file was copied, the tampered one fetched
    assert r.counts.fetched == model.CHUNK_SIZE and r.counts.copied == 9 * MiB - model.CHUNK_SIZE
    assert f.read_bytes() == (src / "big.bin").read_bytes()


def test_a_local_copy_that_changed_is_not_used(tmp_path: Path) -> None:
    """A record points at another root's file that was changed since: its stat differs, so it
    is not opened; and bytes read from a file that lies are refused piece by piece."""
    src = make(tmp_path / "src", 1)
    repo = Repo(str(tmp_path / "store"))
    repo.put_path(str(src), "p", "a", "dataset")
    r = reuse(tmp_path)
    get(repo, "p/a", tmp_path / "one", r)
    (tmp_path / "one" / "big.bin").write_bytes(os.urandom(9 * MiB))
    get(repo, "p/a", tmp_path / "two", r)
    assert r.counts.copied == 64 * 1024 and r.counts.fetched == 9 * MiB  # f0.bin: unchanged
    assert same_tree(src, tmp_path / "two")


def test_the_nodes_content_cache_is_used_and_verified(tmp_path: Path, s3_store_uri: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good, bad = os.urandom(1000), os.urandom(1000)
    (src / "good").write_bytes(good)
    (src / "bad").write_bytes(bad)
    repo = Repo(s3_store_uri)
    repo.put_path(str(src), "p", "a", "dataset")
    blobs = tmp_path / "blobs"
    for data, body in ((good, good), (bad, b"\0" * 1000)):  # the second cache file is corrupt
        d = model.sha256_hex(data)
        (blobs / "objects" / d[:2]).mkdir(parents=True, exist_ok=True)
        (blobs / "objects" / d[:2] / d[2:]).write_bytes(body)
    r = get(repo, "p/a", tmp_path / "out", reuse(tmp_path, blobs))
    assert (r.counts.copied, r.counts.fetched) == (1000, 1000)
    assert (tmp_path / "out" / "bad").read_bytes() == bad


def test_skip_cache_fetches_everything(tmp_path: Path) -> None:
    src = make(tmp_path / "src", 2)
    repo = Repo(str(tmp_path / "store"))
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    get(repo, "p/a", tmp_path / "out", reuse(tmp_path))
    r = get(repo, "p/a", tmp_path / "out", Reuse.open(str(tmp_path / "cache"), skip_cache=True))
    assert r.counts.fetched == rec.size and r.counts.files_kept == 0


def test_a_failed_download_leaves_no_file_under_its_name(tmp_path: Path) -> None:
    """A missing store object: the file that needs it is not created (and an old file at
    that path is left as it was), with reuse as without."""
    src = make(tmp_path / "src", 1)
    repo = Repo(str(tmp_path / "store"))
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    e = repo.entry(rec, "big.bin")
    assert e is not None
    os.unlink(repo.store.local_path(model.object_key(e.chunks[1])))  # type: ignore[arg-type]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "big.bin").write_bytes(b"old")
    with pytest.raises(IntegrityError):
        get(repo, "p/a", tmp_path / "out", reuse(tmp_path))
    assert (tmp_path / "out" / "big.bin").read_bytes() == b"old"
    assert not [p for p in os.listdir(tmp_path / "out") if "tmp" in p]
    assert fetch  # the module under test writes temp files next to the destination
