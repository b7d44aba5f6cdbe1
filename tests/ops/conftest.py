"""Fixtures for handler tests (the helpers they use live in opshelp.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pyfuse3
import pytest
from opshelp import BIG, FS, Clock, Probe, Token

from artifactfs.catalog import Catalog
from artifactfs.drafts.area import DraftArea
from artifactfs.drafts.files import manifest_loader
from artifactfs.drafts.ops import DraftOps
from artifactfs.mount.access import Access
from artifactfs.mount.blobcache import BlobCache
from artifactfs.mount.cache import ManifestCache
from artifactfs.mount.namespace import Namespace
from artifactfs.mount.ops import Operations
from artifactfs.repo import Repo
from artifactfs.store.local import LocalStore


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("source")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    (root / "data" / "deep").mkdir()
    (root / "data" / "deep" / "x.txt").write_text("deep\n")
    (root / "empty").mkdir()
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "README").write_text("hello\n")
    os.symlink("README", root / "link")
    many = root / "many"
    many.mkdir()
    for i in range(300):
        (many / f"f{i:04d}").write_text(f"{i}\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return str(root)


@pytest.fixture
def repo(tmp_path: Any) -> Repo:
    return Repo(LocalStore(str(tmp_path / "store")))


@pytest.fixture
def make_fs(tmp_path: Any, repo: Repo) -> Iterator[Callable[..., FS]]:
    made: list[FS] = []

    def make(remote: bool = False, refresh: float = 10.0, cache_size: int = 1 << 30,
             cache: str = "cache", timeout: float = 30.0, drafts: bool = False,
             may_write: Callable[[int, str], bool] | None = None,
             access: Access | None = None) -> FS:
        store = Probe(repo.store, remote=remote)
        clock = Clock()
        manifest = ManifestCache(str(tmp_path / cache / "manifest"))
        blobs = BlobCache(store, str(tmp_path / cache / "blobs"), cache_size, min_free=0,
                          timeout=timeout,
                          sidecar_get=lambda k: manifest.get_doc(k),
                          sidecar_put=lambda k, v: manifest.put_docs([(k, v)]))
        inval: list[tuple[int, bytes]] = []
        area = DraftArea(str(tmp_path / cache / "drafts"), manifest_loader(manifest, store),
                         blobs.copy_to) if drafts else None
        catalog = Catalog(store)
        ns = Namespace(catalog, manifest, blobs, refresh=refresh, clock=clock,
                       invalidate=lambda p, n: inval.append((p, n)), access=access,
                       drafts=lambda host: DraftOps(host, area, catalog, may_write))
        fs = FS(ns, Operations(ns), store, clock, manifest, blobs, inval, area)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.close()


@pytest.fixture(autouse=True)
def fake_readdir_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    def reply(token: Token, name: bytes, attr: Any, next_id: int) -> bool:
        if len(token.out) >= token.limit:
            return False
        token.out.append((name, attr, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)


