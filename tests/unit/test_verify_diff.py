"""verify.py (which digest is which, checking a local copy) and diffs.py (added, removed,
changed, renamed by content), on the directory store and on S3."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from artifactfs import model, statcache
from artifactfs.diffs import diff
from artifactfs.dlcache import Reuse
from artifactfs.repo import Repo
from artifactfs.statcache import StatCache
from artifactfs.verify import describe, file_digest, verify_tree

MiB = 1 << 20


def make(src: Path) -> Path:
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_text("a")
    (src / "d" / "b.txt").write_text("b")
    (src / "big.bin").write_bytes(os.urandom(9 * MiB))
    (src / "empty").mkdir()
    os.symlink("d/a.txt", src / "link")
    return src


def test_describe_names_each_digest_and_plain_sha256_when_known(tmp_path: Path) -> None:
    small = model.file_entry(3, hashlib.sha256(b"abc").hexdigest())
    assert describe(small) == {"digest": small.digest, "digest_kind": "sha256",
                               "sha256": small.digest}
    chunks = [model.sha256_hex(b"x"), model.sha256_hex(b"y")]
    big = model.file_entry(model.CHUNK_SIZE + 1, model.chunked_digest(chunks), chunks)
    assert describe(big) == {"digest": big.digest, "digest_kind": "sha256-chunks"}
    ref = model.ref_entry(model.RefInfo("s3://b/k", etag='"e"'), 5)
    assert describe(ref) == {"digest": '"e"', "digest_kind": "etag"}
    assert describe(model.symlink_entry("t"))["digest_kind"] == "sha256-target"


def test_file_digest_matches_what_put_records(tmp_path: Path) -> None:
    src = make(tmp_path / "src")
    repo = Repo(str(tmp_path / "store"))
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    e = repo.entry(rec, "big.bin")
    assert e is not None
    d = file_digest(str(src / "big.bin"))
    assert d["digest"] == e.digest and d["digest_kind"] == "sha256-chunks"
    assert d["sha256"] == hashlib.sha256((src / "big.bin").read_bytes()).hexdigest()
    assert d["sha256"] != e.digest  # what sha256sum prints differs over 8 MiB
    assert file_digest(str(src / "d" / "a.txt"))["digest"] == model.sha256_hex(b"a")


def test_verify_finds_missing_changed_and_extra(tmp_path: Path, store_uri: str) -> None:
    src = make(tmp_path / "src")
    repo = Repo(store_uri)
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    load = repo.catalog.load_node
    out = tmp_path / "out"
    shutil.copytree(src, out, symlinks=True)
    report = verify_tree(load, rec.root, str(out))
    assert report.ok and report.checked == 5
    (out / "d" / "b.txt").unlink()
    (out / "d" / "a.txt").write_text("A")
    (out / "extra.txt").write_text("x")
    os.rmdir(out / "empty")
    report = verify_tree(load, rec.root, str(out))
    assert (report.missing, report.changed, report.extra) == (
        ["d/b.txt", "empty"], ["d/a.txt"], ["extra.txt"])
    assert verify_tree(load, rec.root, str(out), path_prefix="big").ok
    assert not verify_tree(load, rec.root, str(out), extra=False).extra


def test_fast_verify_trusts_stat_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", -10**18)
    src = make(tmp_path / "src")
    repo = Repo(str(tmp_path / "store"))
    rec, _ = repo.put_path(str(src), "p", "a", "dataset")
    hints = StatCache(str(tmp_path / "hints.db"))
    repo.download(rec, str(tmp_path / "out"), reuse=Reuse(hints))
    assert hints.root_of(os.path.realpath(tmp_path / "out"))[0] == "p/a:v0"  # type: ignore[index]
    calls: list[str] = []
    import artifactfs.verify as v
    real = v._hash_file
    monkeypatch.setattr(v, "_hash_file", lambda p, plain: calls.append(p) or real(p, plain))
    assert verify_tree(repo.catalog.load_node, rec.root, str(tmp_path / "out"), hints=hints).ok
    assert calls == []
    assert verify_tree(repo.catalog.load_node, rec.root, str(tmp_path / "out")).ok
    assert len(calls) == 3


def test_diff_added_removed_changed_and_renamed(tmp_path: Path, store_uri: str) -> None:
    src = make(tmp_path / "src")
    repo = Repo(store_uri)
    a, _ = repo.put_path(str(src), "p", "a", "dataset")
    os.rename(src / "big.bin", src / "d" / "big-moved.bin")
    (src / "d" / "a.txt").write_text("changed")
    (src / "d" / "b.txt").unlink()
    (src / "new.txt").write_text("new")
    b, _ = repo.put_path(str(src), "p", "a", "dataset")
    d = diff(repo.catalog.load_node, a, b)
    assert [x["path"] for x in d.added] == ["new.txt"]
    assert [x["path"] for x in d.removed] == ["d/b.txt"]
    assert [x["path"] for x in d.changed] == ["d/a.txt"]
    assert [(x["from"], x["to"]) for x in d.renamed] == [("big.bin", "d/big-moved.bin")]
    assert d.lines() == ["R big.bin -> d/big-moved.bin", "M d/a.txt", "D d/b.txt",
                         "A new.txt"]
    assert diff(repo.catalog.load_node, a, a).same
    doc = d.to_json()
    assert doc["a"] == "p/a:v0" and doc["renamed"][0]["digest_kind"] == "sha256-chunks"


def test_renames_pair_same_base_names_first(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    for n in ("one.txt", "two.txt"):
        (src / "x" / n).write_text("same")
    repo = Repo(str(tmp_path / "store"))
    a, _ = repo.put_path(str(src), "p", "a", "dataset")
    os.rename(src / "x", src / "y")
    b, _ = repo.put_path(str(src), "p", "a", "dataset")
    d = diff(repo.catalog.load_node, a, b)
    assert sorted((x["from"], x["to"]) for x in d.renamed) == [
        ("x/one.txt", "y/one.txt"), ("x/two.txt", "y/two.txt")]
