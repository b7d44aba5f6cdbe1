"""Digest hints for put: unchanged files (same stat, digest held by the latest version at the
same path) are not read again; anything else is, and the cache can never make a version wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactfs import ingest, statcache
from artifactfs.repo import Repo
from artifactfs.statcache import StatCache


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Local files whose bytes ingest read, in order."""
    seen: list[str] = []
    real = ingest._read_piece

    def spy(src, off, want):  # type: ignore[no-untyped-def]
        seen.append(os.path.basename(src.local))
        return real(src, off, want)

    monkeypatch.setattr(ingest, "_read_piece", spy)
    return seen


def tree(root: Path, n: int = 20) -> Path:
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        (root / "sub" / f"f{i:02d}.txt").write_text(f"file {i}\n")
    (root / "big.bin").write_bytes(os.urandom(9 << 20))  # two chunks
    return root


def files_of(repo: Repo, ref: str) -> dict[str, bytes]:
    rec = repo.resolve(ref)
    return {p: e.digest.encode() for p, e in repo.entries(rec) if e.kind == "file"}


def test_unchanged_files_are_not_read_again(tmp_path, reads, monkeypatch, store_uri):
    """On the directory store and on S3."""
    monkeypatch.setattr(statcache, "RACY_NS", -10**18)  # files written just now count as settled
    monkeypatch.setattr(statcache, "MIN_SIZE", 0)
    src = tree(tmp_path / "src")
    repo = Repo(store_uri)
    hints = StatCache(str(tmp_path / "cache" / "hints.db"))
    repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    assert len(reads) == 20 + 2
    reads.clear()
    rec, created = repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    assert reads == [] and not created and rec.version == 0  # nothing read, nothing new
    # a change that keeps size and mtime still changes the ctime: that file is read again
    f = src / "sub" / "f03.txt"
    st = f.stat()
    f.write_text("FILE 3\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    rec1, created = repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    assert created and reads == ["f03.txt"]
    out = tmp_path / "out"
    repo.download(rec1, str(out))
    assert (out / "sub" / "f03.txt").read_text() == "FILE 3\n"
    assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert files_of(repo, "p/a:v1")["big.bin"] == files_of(repo, "p/a:v0")["big.bin"]


def test_a_hint_alone_is_not_trusted(tmp_path, reads, monkeypatch):
    """The hint names a digest that the latest version does not hold at that path (here: the
    version was deleted): the file is read, and the new version is complete."""
    monkeypatch.setattr(statcache, "RACY_NS", -10**18)
    monkeypatch.setattr(statcache, "MIN_SIZE", 0)
    src = tree(tmp_path / "src", 3)
    repo = Repo(str(tmp_path / "store"))
    hints = StatCache(str(tmp_path / "hints.db"))
    repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    repo.catalog.delete_version("p", "a", 0)
    reads.clear()
    rec, created = repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    assert created and rec.version == 1 and len(reads) == 3 + 2
    # another artifact with the same files: hints do not cross artifacts either
    reads.clear()
    repo.put_path(str(src), "p", "other", "dataset", hints=hints)
    assert len(reads) == 3 + 2


def test_small_files_have_no_hints(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(statcache, "RACY_NS", -10**18)
    src = tree(tmp_path / "src", 5)
    repo = Repo(str(tmp_path / "store"))
    hints = StatCache(str(tmp_path / "hints.db"))
    repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    reads.clear()
    repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    assert sorted(reads) == [f"f{i:02d}.txt" for i in range(5)]  # big.bin: not read again


def test_files_changed_just_before_the_put_are_not_recorded(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(statcache, "MIN_SIZE", 0)
    src = tree(tmp_path / "src", 2)  # written a moment ago: within RACY_NS
    repo = Repo(str(tmp_path / "store"))
    hints = StatCache(str(tmp_path / "hints.db"))
    repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    reads.clear()
    repo.put_path(str(src), "p", "a", "dataset", hints=hints)
    assert len(reads) == 2 + 2  # read again: their stat could still change within a tick


def test_a_broken_cache_file_only_turns_the_cache_off(tmp_path, reads, caplog):
    src = tree(tmp_path / "src", 2)
    bad = tmp_path / "hints.db"
    bad.write_bytes(b"this is not a database" * 100)
    hints = StatCache(str(bad))
    _, created = Repo(str(tmp_path / "store")).put_path(str(src), "p", "a", "dataset",
                                                        hints=hints)
    assert created and hints.db is None and "not using the digest cache" in caplog.text
    assert StatCache(str(tmp_path / "no" / "such" / "dir" / "x.db")).db is not None  # made
