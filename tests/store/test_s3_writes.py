"""The S3 write path, counted on the moto server: existing content is looked up (HEAD) rather
than sent again, and uploads keep many requests in flight (issue 18 items 1-2)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifactfs import model
from artifactfs.drafts.area import DraftArea, store_copier
from artifactfs.drafts.commit import commit_draft
from artifactfs.repo import Repo
from artifactfs.store import open_store

pytestmark = pytest.mark.s3
TREE = {f"d{i % 4}/f{i:03d}.bin": os.urandom(1000 + i) for i in range(60)}
TREE["big.bin"] = os.urandom(model.CHUNK_SIZE + 1000)  # two chunks


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for p, data in files.items():
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(data)
    return root


def blob_keys(files: dict[str, bytes]) -> set[str]:
    out = set()
    for data in files.values():
        for off in range(0, max(1, len(data)), model.CHUNK_SIZE):
            out.add(model.object_key(model.sha256_hex(data[off:off + model.CHUNK_SIZE])))
    return out


def body_puts(log: Any, keys: set[str]) -> list[str]:
    return [path for _, path, length, _ in log.of("PUT")
            if length > 0 and any(path.endswith(k) for k in keys)]


@pytest.fixture
def repo(s3_store_uri: str) -> Iterator[Repo]:
    store = open_store(s3_store_uri)
    yield Repo(store)
    store.close()


def test_a_recommit_of_existing_content_sends_no_body(repo: Repo, tmp_path: Path,
                                                      s3_requests: Any) -> None:
    base = repo.put_path(str(write_tree(tmp_path / "src", TREE)), "vision", "cats",
                         "dataset")[0]
    area = DraftArea(str(tmp_path / "drafts"), repo.catalog.load_node,
                     store_copier(repo.store))
    try:
        d = area.create("vision", "cats", "again", os.getuid(), base)
        for p, data in TREE.items():  # every file written again, same bytes (tar -x, rsync)
            local = d.open_for_write(p, truncate=True)
            Path(local).write_bytes(data)
            d.release(local)
        s3_requests.requests.clear()
        rec, created = commit_draft(area, d, repo)
    finally:
        area.close()
    assert not created and rec.version == 0  # the same content: no new version
    keys = blob_keys(TREE)
    assert [r for r in s3_requests.of("PUT", "/objects/") if r[2] > 0] == []  # nor nodes
    heads = {path for _, path, _, status in s3_requests.of("HEAD") if status == 200}
    assert all(any(h.endswith(k) for h in heads) for k in keys)


def test_content_stored_under_another_name_soon_stops_sending_bodies(
        repo: Repo, tmp_path: Path, s3_requests: Any) -> None:
    files = {f"f{i:03d}.txt": os.urandom(20_000) for i in range(300)}
    src = str(write_tree(tmp_path / "src", files))
    repo.put_path(src, "vision", "cats", "dataset")
    puts = len(body_puts(s3_requests, blob_keys(files)))
    assert puts == len(files)  # a fresh upload: written at once, no look first
    assert len(s3_requests.of("HEAD", "/objects/")) < 40
    s3_requests.requests.clear()
    repo.put_path(src, "vision", "dogs", "dataset")  # the same files, no hints
    again = body_puts(s3_requests, blob_keys(files))
    assert len(again) < len(files) // 4, len(again)


def test_uploads_keep_many_requests_in_flight(repo: Repo, tmp_path: Path,
                                              s3_requests: Any) -> None:
    files = {f"f{i:03d}.txt": os.urandom(100) for i in range(400)}
    repo.put_path(str(write_tree(tmp_path / "src", files)), "vision", "cats", "dataset")
    assert len(body_puts(s3_requests, blob_keys(files))) == len(files)
    assert s3_requests.max_in_flight >= 16, s3_requests.max_in_flight
