"""Registry links (links.py) and collection discovery/edits (discovery.py).  Links on the
directory store and on S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactfs import discovery, links
from artifactfs.errors import AlreadyExists, InvalidName, NotFound, TypeConflict, UsageError
from artifactfs.repo import Repo


def put(repo: Repo, tmp: Path, name: str, content: str, type_: str = "model",
        project: str = "p") -> tuple[str, object]:
    src = tmp / f"src-{name}-{content}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "w.bin").write_text(content)
    rec, _ = repo.put_path(str(src), project, name, type_)
    return rec.label, rec


def test_link_points_at_the_source_tree_without_copying(tmp_path: Path, store_uri: str) -> None:
    repo = Repo(store_uri)
    _, v0 = put(repo, tmp_path, "m", "zero")
    _, v1 = put(repo, tmp_path, "m", "one")
    objects = sum(1 for _ in repo.store.list("objects/"))
    l0 = links.link(repo, v0, "best-model", ["prod"])  # type: ignore[arg-type]
    assert l0.label == "registry/best-model:v0" and l0.source == "p/m:v0"
    assert (l0.root, l0.digest, l0.type) == (v0.root, v0.digest, "model")  # type: ignore[attr-defined]
    assert sum(1 for _ in repo.store.list("objects/")) == objects  # no bytes copied
    assert links.link(repo, v0, "best-model").version == 0  # same source: the same link
    l1 = links.link(repo, v1, "best-model", ["prod"])  # type: ignore[arg-type]
    assert l1.version == 1 and repo.catalog.aliases("registry", "best-model") == {"prod": 1}
    assert [r.label for r in links.links_of(repo, v0)] == ["registry/best-model:v0"]  # type: ignore[arg-type]
    assert links.source_of(repo, l1).label == "p/m:v1"  # type: ignore[union-attr]
    assert links.link(repo, l1, "other").source == "p/m:v1"  # a link of a link: its source
    out = tmp_path / "out"
    repo.download(repo.resolve("registry/best-model:prod"), str(out))
    assert (out / "w.bin").read_text() == "one"
    links.unlink(repo, l0)
    assert links.links_of(repo, v0) == []  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        repo.resolve("registry/best-model:v0")
    with pytest.raises(UsageError, match="not a link"):
        links.unlink(repo, v1)  # type: ignore[arg-type]


def test_registry_rules(tmp_path: Path) -> None:
    repo = Repo(str(tmp_path / "store"))
    _, m = put(repo, tmp_path, "m", "x")
    _, d = put(repo, tmp_path, "d", "y", "dataset")
    links.link(repo, m, "c")  # type: ignore[arg-type]
    with pytest.raises(TypeConflict):
        links.link(repo, d, "c")  # type: ignore[arg-type]
    with pytest.raises(InvalidName, match="link"):
        put(repo, tmp_path, "c", "z", project="registry")  # only links write the registry
    assert links.parse_target("wandb-registry-model/c") == "c"
    assert links.parse_target("team/model-registry/c") == "c"
    assert links.parse_target("registry/c") == links.parse_target("c") == "c"
    with pytest.raises(UsageError):
        links.parse_target("a/b/c/d")


def test_collections_types_and_tags(tmp_path: Path) -> None:
    repo = Repo(str(tmp_path / "store"))
    _, a = put(repo, tmp_path, "a", "1", "dataset")
    put(repo, tmp_path, "b", "1", "model")
    assert [c.name for c in discovery.collections(repo, "p")] == ["a", "b"]
    assert [c.name for c in discovery.collections(repo, "p", "model")] == ["b"]
    assert discovery.types(repo, "p") == ["dataset", "model"]
    assert "p" in discovery.projects(repo)
    discovery.set_version_tags(repo, a, ["gold", "eu"])  # type: ignore[arg-type]
    discovery.edit_collection(repo, "p", "b", description="models", tags=["gold"])
    found = discovery.search(repo, "gold")
    assert [r.label for r in found.versions] == ["p/a:v0"]
    assert [c.name for c in found.collections] == ["b"]
    assert repo.catalog.get_collection("p", "b").description == "models"
    discovery.edit_collection(repo, "p", "b", tags=[])
    assert discovery.search(repo, "gold").collections == []
    assert not list(repo.store.list("tags/gold/p~b"))  # the marker went too
    with pytest.raises(InvalidName):
        discovery.set_version_tags(repo, a, ["bad tag!"])  # type: ignore[arg-type]


def test_a_stale_tag_marker_is_not_a_result(tmp_path: Path) -> None:
    repo = Repo(str(tmp_path / "store"))
    put(repo, tmp_path, "a", "1")
    repo.store.put_if_absent("tags/gold/p~a~0", b"{}")  # a crash between marker and record
    assert discovery.search(repo, "gold").versions == []


def test_delete_then_recreate_with_another_type(tmp_path: Path) -> None:
    repo = Repo(str(tmp_path / "store"))
    put(repo, tmp_path, "x", "1", "dataset")
    with pytest.raises(TypeConflict):
        put(repo, tmp_path, "x", "2", "model")
    discovery.delete_collection(repo, "p", "x", delete_aliases=False)
    assert discovery.collections(repo, "p") == []
    label, rec = put(repo, tmp_path, "x", "2", "model")
    assert rec.type == "model" and label == "p/x:v1"  # type: ignore[attr-defined]
    assert [c.type for c in discovery.collections(repo, "p")] == ["model"]


def test_change_type_and_rename(tmp_path: Path) -> None:
    repo = Repo(str(tmp_path / "store"))
    _, v0 = put(repo, tmp_path, "old", "1", "dataset")
    put(repo, tmp_path, "old", "2", "dataset")
    repo.catalog.set_alias("p", "old", 0, "best")
    discovery.set_version_tags(repo, v0, ["gold"])  # type: ignore[arg-type]
    run = repo.catalog.create_run("p", "train")
    repo.catalog.mark_input(run, v0)  # type: ignore[arg-type]
    links.link(repo, v0, "reg")  # type: ignore[arg-type]
    discovery.change_type(repo, "p", "old", "model")
    assert {r.type for r in repo.catalog.versions("p", "old")} == {"model"}
    discovery.rename(repo, "p", "old", "new")
    with pytest.raises(NotFound):
        repo.catalog.get_collection("p", "old")
    assert [r.label for r in repo.catalog.versions("p", "new")] == ["p/new:v0", "p/new:v1"]
    assert repo.catalog.aliases("p", "new") == {"best": 0}
    assert [r.label for r in discovery.search(repo, "gold").versions] == ["p/new:v0"]
    new0 = repo.resolve("p/new:v0")
    assert [r.id for r in repo.catalog.used_by(new0)] == [run.id]
    assert [str(r) for r in repo.catalog.run_artifacts(run, "inputs")] == ["p/new:v0"]
    assert repo.resolve("registry/reg").source == "p/new:v0"
    assert [r.label for r in links.links_of(repo, new0)] == ["registry/reg:v0"]
    put(repo, tmp_path, "taken", "1")
    with pytest.raises(AlreadyExists):
        discovery.rename(repo, "p", "new", "taken")
    assert os.path.isdir(tmp_path / "store")
