"""Catalog protocol over a local store: allocation, aliases, TTL, deletion, runs."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import replace

import pytest

from artifactfs import model
from artifactfs.catalog import Catalog
from artifactfs.errors import NotFound, TypeConflict, UsageError
from artifactfs.names import Ref
from artifactfs.repo import Repo
from artifactfs.store import LocalStore


def node(text: str) -> model.Node:
    e = model.file_entry(len(text), model.sha256_hex(text.encode()))
    return model.encode_node({"f": e})


@pytest.fixture
def cat(tmp_path: os.PathLike[str]) -> Catalog:
    c = Catalog(LocalStore(str(tmp_path)))
    return c


def commit(cat: Catalog, text: str, name: str = "cats", **kw: object) -> tuple[int, bool]:
    n = node(text)
    cat.save_node(n)
    rec, created = cat.commit_version("vision", name, "dataset", n, **kw)  # type: ignore[arg-type]
    return rec.version, created


def test_versions_are_contiguous_and_unchanged_content_is_not_a_version(cat: Catalog) -> None:
    assert commit(cat, "a") == (0, True)
    assert commit(cat, "a") == (0, False)
    assert commit(cat, "b") == (1, True)
    assert commit(cat, "a") == (2, True)  # equal to an older one, not to the latest
    assert [r.version for r in cat.versions("vision", "cats")] == [0, 1, 2]
    assert cat.resolve(Ref("vision", "cats")).version == 2


def test_type_is_unique_per_name(cat: Catalog) -> None:
    commit(cat, "a")
    n = node("x")
    cat.save_node(n)
    with pytest.raises(TypeConflict):
        cat.commit_version("vision", "cats", "model", n)


def test_aliases_move_and_latest_follows_deletes(cat: Catalog) -> None:
    commit(cat, "a", aliases=["best"])
    commit(cat, "b")
    assert cat.aliases("vision", "cats") == {"best": 0}
    cat.set_alias("vision", "cats", 1, "best")
    assert cat.aliases("vision", "cats") == {"best": 1}
    with pytest.raises(UsageError):
        cat.delete_version("vision", "cats", 1)  # holds 'best'
    cat.delete_version("vision", "cats", 1, delete_aliases=True)
    assert cat.resolve(Ref("vision", "cats")).version == 0
    assert cat.aliases("vision", "cats") == {}
    with pytest.raises(NotFound):
        cat.resolve(Ref("vision", "cats", "v1"))
    assert commit(cat, "c") == (2, True)  # numbers are never reused


def test_ttl_expiry_and_forbidden_types(cat: Catalog) -> None:
    commit(cat, "a")
    rec = replace(cat.get_version("vision", "cats", 0)[0], created_at="2000-01-01T00:00:00Z")
    cat.store.put("artifacts/vision/cats/versions/0000000000.json",
                  json.dumps(rec.to_json()).encode())  # an old version
    cat.set_ttl("vision", "cats", 0, 30)
    with pytest.raises(NotFound):
        cat.resolve(Ref("vision", "cats"))
    cat.set_ttl("vision", "cats", 0, None)
    cat.set_project_ttl("vision", 1)
    assert cat.versions("vision", "cats") == []
    cat.set_project_ttl("vision", None)
    assert len(cat.versions("vision", "cats")) == 1
    n = node("code")
    cat.save_node(n)
    cat.commit_version("vision", "src", "code", n)
    with pytest.raises(UsageError):
        cat.set_ttl("vision", "src", 0, 3)


def test_runs_and_lineage(cat: Catalog) -> None:
    run = cat.create_run("vision", job_type="train")
    commit(cat, "a")
    used = cat.resolve(Ref("vision", "cats"))
    cat.mark_input(run, used)
    n = node("m")
    cat.save_node(n)
    rec, _ = cat.commit_version("vision", "model", "model", n, run=f"vision/{run.id}")
    assert cat.logged_by(rec) == run
    assert cat.used_by(used) == [run]
    assert cat.run_artifacts(run, "inputs") == [Ref("vision", "cats", "v0")]
    assert cat.run_artifacts(run, "outputs") == [Ref("vision", "model", "v0")]


def _put_worker(store: str, i: int, q: mp.Queue[str]) -> None:
    src = os.path.join(store, f"../src{i}")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "data.txt"), "w") as f:
        f.write(f"writer {i}")
    rec, created = Repo(store).put_path(src, "vision", "race", "dataset")
    q.put(f"{rec.version}:{created}")


def test_eight_processes_get_eight_consecutive_versions(tmp_path: os.PathLike[str]) -> None:
    store = os.path.join(str(tmp_path), "store")
    ctx = mp.get_context("fork")
    q: mp.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_put_worker, args=(store, i, q)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = sorted(q.get(timeout=5) for _ in range(8))
    assert sorted(int(g.split(":")[0]) for g in got) == list(range(8))
    assert all(g.endswith(":True") for g in got)
    assert Catalog(LocalStore(store)).version_numbers("vision", "race") == list(range(8))
