"""Hostile and extreme trees (issue 11, items 10, 11, 13, 14): walks bounded by what the
tree declares, no recursion, long names, failed gets leave nothing half-written, a huge
directory listed part by part and a prefix get reading only the nodes on its path."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deeptree import rm_deep

from artifactfs import gc, model, tree
from artifactfs.errors import IntegrityError
from artifactfs.repo import Repo
from artifactfs.store.base import ListItem, Store


def blob(repo: Repo, data: bytes) -> model.Entry:
    digest = model.sha256_hex(data)
    repo.store.put_if_absent(model.object_key(digest), data)
    return model.file_entry(len(data), digest)


def dir_entry(node: model.Node, count: int | None = None, size: int | None = None
              ) -> model.Entry:
    """A directory entry for ``node`` that may declare totals other than the node's."""
    return model.Entry("dir", size=node.size if size is None else size, digest=node.digest,
                       oid=node.oid, count=node.count if count is None else count)


def save(repo: Repo, node: model.Node) -> model.Node:
    repo.catalog.save_node(node)
    return node


def publish(repo: Repo, root: model.Node) -> None:
    repo.catalog.commit_version("p", "bomb", "dataset", root)


def test_a_dag_that_lies_about_its_totals_stops_every_walk(tmp_path: Path) -> None:
    """42 nodes expanding to 2^40 files, each edge declaring one file: ls, get and gc stop
    (gc, which walks each node once, finishes) with a clear error."""
    repo = Repo(str(tmp_path / "store"))
    node = save(repo, model.encode_node({"f": blob(repo, b"x")}))
    for _ in range(40):
        node = save(repo, model.encode_node({"a": dir_entry(node, 1, 1),
                                             "b": dir_entry(node, 1, 1)}))
    publish(repo, node)  # the root declares 2 files
    rec = repo.resolve("p/bomb")
    with pytest.raises(IntegrityError, match="does not hold what its parent declares"):
        list(repo.entries(rec))
    with pytest.raises(IntegrityError, match="does not hold what its parent declares"):
        repo.download(rec, str(tmp_path / "out"))
    assert sum(len(f) for _, _, f in os.walk(tmp_path / "out")) <= 2
    assert gc.collect(repo, grace_seconds=0).deleted == 0


def test_empty_directories_of_a_dag_are_capped(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "MAX_EMPTY_DIRS", 1000)
    repo = Repo(str(tmp_path / "store"))
    node = save(repo, model.EMPTY_NODE)
    for _ in range(30):  # 2^30 empty directories, every total an honest 0
        node = save(repo, model.encode_node({"a": dir_entry(node), "b": dir_entry(node)}))
    publish(repo, node)
    with pytest.raises(IntegrityError, match="more than 1000 empty directories"):
        list(repo.entries(repo.resolve("p/bomb")))


def test_a_tree_2000_deep_is_put_listed_fetched_and_diffed(tmp_path: Path) -> None:
    """No recursion over the tree's depth: model, tree, fetch, catalog and gc."""
    repo = Repo(str(tmp_path / "store"))
    deep = "/".join(["d"] * 2000) + "/f"
    rec, _ = repo.commit_entries("p", "deep", "dataset", {deep: blob(repo, b"bottom")})
    [(path, e)] = [(p, e) for p, e in repo.entries(rec)]
    assert path == deep and e.size == 6
    assert repo.entry(rec, deep) == e
    rec2, _ = repo.commit_entries("p", "deep", "dataset", {deep: blob(repo, b"other")},
                                  base=rec)
    assert tree.diff(repo.catalog.load_node, rec.root, rec2.root).changed == [deep]
    assert gc.collect(repo, grace_seconds=0).reachable > 2000
    out = tmp_path / "o"  # deeper than PATH_MAX below the root: directories by fd
    assert repo.download(rec, str(out)) == 1
    fd = os.open(out, os.O_RDONLY)
    try:
        for _ in range(2000):
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("f", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"bottom"
    finally:
        os.close(fd)
        rm_deep(out)


def test_get_of_names_of_255_bytes_and_a_failed_get(tmp_path: Path) -> None:
    repo = Repo(str(tmp_path / "store"))
    names = ["a" * 255, "é" * 127, "b" * 240]  # 255, 254 and 240 bytes
    changes = {f"sub/{n}": blob(repo, n.encode()) for n in names}
    rec, _ = repo.commit_entries("p", "long", "dataset", changes)
    out = tmp_path / "out"
    assert repo.download(rec, str(out)) == 3
    assert sorted(os.listdir(out / "sub")) == sorted(names)
    assert os.listdir(out) == ["sub"]  # no temp directory left
    # a failed get: the file whose object is gone is not there, nor any temp file
    victim = changes[f"sub/{names[1]}"]
    repo.store.delete(model.object_key(victim.digest))
    out2 = tmp_path / "out2"
    with pytest.raises(IntegrityError, match="missing"):
        repo.download(rec, str(out2))
    left = {str(p.relative_to(out2)) for p in out2.rglob("*")}
    assert f"sub/{names[1]}" not in left and not any("artifactfs-tmp" in p for p in left)
    for p in left - {"sub"}:
        assert (out2 / p).read_bytes() == p.split("/")[-1].encode()  # whole, never partial


class Counting(Store):
    """A store that counts reads of tree nodes (and forwards everything)."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.uri = inner, inner.uri
        self.gets: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str) -> bytes:
        self.gets[key] += 1
        return self.inner.get(key)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_with_etag(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def head(self, key: str) -> ListItem | None:
        return self.inner.head(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.put_if_absent(key, data)

    def cas(self, key: str, data: bytes, etag: str | None) -> str:
        return self.inner.cas(key, data, etag)

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ListItem]:
        return self.inner.list(prefix)

    def list_dirs(self, prefix: str) -> list[str]:
        return self.inner.list_dirs(prefix)


def test_a_split_directory_is_streamed_and_a_prefix_get_reads_only_its_path(
        tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, item 14 (at small split sizes): listing holds one part at a time; a prefix
    get of one file reads the root, the index and the part that holds the name (perhaps the
    next, to see where the names with that prefix end)."""
    monkeypatch.setattr(model, "SPLIT_AT", 8)
    monkeypatch.setattr(model, "PART_AVG", 3)
    repo = Repo(store_uri)
    changes = {f"big/f{i:03d}": blob(repo, f"file {i}".encode()) for i in range(300)}
    changes["other/x"] = blob(repo, b"x")
    rec, _ = repo.commit_entries("p", "big", "dataset", changes)
    parts = repo.catalog.load_index(repo.catalog.load_node(rec.root)["big"].oid)
    assert parts is not None and len(parts) > 20
    store = Counting(repo.store)
    fresh = Repo(store)
    node_keys = {model.object_key(p.oid) for p in parts}
    it = fresh.entries(fresh.resolve("p/big"))
    assert next(it)[0] == "big/f000"
    assert sum(n for k, n in store.gets.items() if k in node_keys) <= 2
    assert len(list(it)) == 300
    store.gets.clear()
    out = tmp_path / "out"
    assert fresh.download(fresh.resolve("p/big"), str(out), path_prefix="big/f150") == 1
    assert os.listdir(out / "big") == ["f150"] and not (out / "other").exists()
    read_parts = sum(n for k, n in store.gets.items() if k in node_keys)
    assert read_parts <= 2, read_parts  # the part holding it (and the next, to see the end)
    assert fresh.entry(fresh.resolve("p/big"), "big/f299") == changes["big/f299"]
