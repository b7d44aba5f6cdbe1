"""Every member of the wandb-shaped API (issue 14: items 1-5, 8, 9) end to end, on a local store
(registry links on S3 too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import artifactfs
from artifactfs.errors import NotFound, StoreUnavailable, TypeConflict, UsageError


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    s = tmp_path / "store"
    monkeypatch.setenv("ARTIFACTFS_STORE", str(s))
    monkeypatch.setenv("ARTIFACTFS_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("ARTIFACTFS_PROJECT", "WANDB_PROJECT", "ARTIFACTFS_ENTITY", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    artifactfs.finish()  # a run another test left current
    yield s
    artifactfs.finish()


def files(tmp: Path, **content: str) -> Path:
    d = tmp / "src"
    for name, text in content.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def log(run: artifactfs.Run, name: str, type_: str = "dataset", **content: str
        ) -> artifactfs.Artifact:
    art = artifactfs.Artifact(name, type_)
    for path, text in content.items():
        with art.new_file(path) as f:
            f.write(text)
    return run.log_artifact(art)


def test_init_takes_wandbs_arguments(store: Path) -> None:
    assert artifactfs.run is None
    run = artifactfs.init(entity="team", name="first", tags=["a"], notes="n", dir=".",
                          mode="online", reinit=True, settings=artifactfs.Settings(x=1),
                          group="g", job_type="train", config={"lr": 1})
    assert artifactfs.run is run and run.project == "uncategorized" and run.name == "first"
    assert (run.entity, run.tags, run.notes, run.group) == ("team", ("a",), "n", "g")
    assert run.path == f"team/uncategorized/{run.id}"
    assert artifactfs.Api().run(run.path).name == "first"
    again = artifactfs.init(project="p", id="fixed")
    assert run is not artifactfs.run and again.id == "fixed"
    assert artifactfs.init(project="p", id="fixed", resume="must").id == "fixed"
    with pytest.raises(UsageError, match="resume='never'"):
        artifactfs.init(project="p", id="fixed", resume="never")
    with pytest.raises(NotFound):
        artifactfs.init(project="p", id="nope", resume="must")
    with pytest.raises(UsageError, match="mode='disabled'"):
        artifactfs.init(mode="disabled")
    with pytest.raises(TypeError, match="bogus"):
        artifactfs.init(bogus=1)
    with artifactfs.init(project="p") as r:
        assert artifactfs.run is r
    assert artifactfs.run is None
    assert artifactfs.login() is True


def test_module_functions_and_names(store: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="init"):
        artifactfs.log_artifact(artifactfs.Artifact("x", "dataset"))
    run = artifactfs.init(project="vision")
    art = artifactfs.Artifact("cats", "dataset")
    with art.new_file("a.txt") as f:
        f.write("a")
    artifactfs.log_artifact(art, aliases=["best"], tags=["gold"])
    assert art.tags == ["gold"] and "best" in art.aliases
    used = artifactfs.use_artifact("cats:best")
    assert used.id == "vision/cats:v0" and used.entity
    api = artifactfs.Api()
    assert api.artifact("cats:best").version == "v0"  # the current run's project
    assert api.artifact("someone/vision/cats:v0").version == "v0"  # an entity is accepted
    assert artifactfs.Api(overrides={"project": "vision"}).artifact_versions(
        "dataset", "cats")[0].version == "v0"
    monkeypatch.setenv("WANDB_PROJECT", "vision")
    run.finish()
    assert artifactfs.Api().artifact("cats").version == "v0"
    monkeypatch.delenv("WANDB_PROJECT")
    with pytest.raises(NotFound, match="uncategorized/cats"):  # wandb's default project
        artifactfs.Api().artifact("cats")
    assert artifactfs.Api().run(f"ent/vision/{run.id}").id == run.id
    assert not artifactfs.Api().artifact_exists("bad name!")


def test_logging_paths_saving_outside_a_run_and_using_pending(store: Path,
                                                              tmp_path: Path) -> None:
    src = files(tmp_path, **{"model.pt": "weights", "dir/a.txt": "a"})
    art = artifactfs.Artifact("p/outside", "dataset")
    art.add_file(str(src / "model.pt"))
    assert art.is_draft()
    art.save()  # no run: one is made in the artifact's project
    assert not art.is_draft() and art.logged_by().job_type == "auto"  # type: ignore[union-attr]
    draft = art.new_draft()
    draft.add_file(str(src / "dir" / "a.txt"))
    draft.save()
    assert draft.version == "v1" and draft.wait() is draft
    run = artifactfs.init(project="p")
    logged = run.log_artifact(str(src / "model.pt"))
    assert logged.name == f"run-{run.id}-model.pt:v0" and logged.type == "unspecified"
    pending = artifactfs.Artifact("fresh", "dataset")
    pending.add_dir(str(src / "dir"))
    got = run.use_artifact(artifact_or_name=pending, aliases=["x"], use_as="input")
    assert got is pending and pending.version == "v0" and "x" in pending.aliases
    assert pending.logged_by() is None and [r.id for r in pending.used_by()] == [run.id]


def test_unchanged_content_keeps_the_callers_description(store: Path) -> None:
    run = artifactfs.init(project="p")
    log(run, "same", a="1")
    art = artifactfs.Artifact("same", "dataset", description="new words", metadata={"k": 2})
    with art.new_file("a") as f:
        f.write("1")
    run.log_artifact(art)
    assert art.version == "v0" and art.description == "new words" and art.metadata == {"k": 2}
    assert artifactfs.Api().artifact("p/same:v0").description == "new words"


def test_distributed_defaults_and_paths(store: Path, tmp_path: Path) -> None:
    src = files(tmp_path, **{"one.txt": "1", "two.txt": "2"})
    with artifactfs.init(project="p", group="g1") as r1:
        r1.upsert_artifact(str(src / "one.txt"), name="dist", type="dataset")
    with artifactfs.init(project="p", group="g1") as r2:
        art = r2.finish_artifact(str(src / "two.txt"), name="dist", type="dataset")
    assert sorted(art.manifest.entries) == ["one.txt", "two.txt"]
    with artifactfs.init(project="p") as r3, pytest.raises(UsageError, match="group"):
        r3.upsert_artifact(str(src / "one.txt"), name="dist", type="dataset")


def test_artifact_members(store: Path, tmp_path: Path) -> None:
    src = files(tmp_path, **{"a.txt": "a", "d/b.txt": "b", "d/c.txt": "c"})
    run = artifactfs.init(project="p")
    art = artifactfs.Artifact("m", "dataset")
    entry = art.add_file(str(src / "a.txt"))
    assert entry.path == entry.name == "a.txt" and entry.size == 1
    assert entry.digest == entry.sha256 and entry.digest_kind == "sha256"
    with pytest.raises(UsageError, match="overwrite=True"):
        art.add_file(str(src / "d" / "b.txt"), name="a.txt")
    art.add_dir(str(src / "d"), name="d")
    (src / "d" / "b.txt").write_text("B")
    with pytest.raises(UsageError, match="merge=True"):
        art.add_dir(str(src / "d"), name="d")
    art.add_dir(str(src / "d"), name="d", merge=True)
    art.add({"k": 1}, "conf")
    tmp = art.add_file(str(src / "a.txt"), name="t/tmp.txt", is_tmp=True)
    assert tmp.path == f"t/{entry.digest[:20]}.txt"
    art.remove(tmp)
    art.add_reference(f"file://{src}/a.txt", name="ref.txt")
    assert sorted(art.manifest.entries) == ["a.txt", "conf.json", "d/b.txt", "d/c.txt",
                                            "ref.txt"]
    run.log_artifact(art, tags=["t1"])
    assert art.id == "p/m:v0" and art.updated_at and art.tags == ["t1"]
    assert art.get("conf") == {"k": 1} and art.state == "COMMITTED"
    assert [f.path for f in art.files()] == ["a.txt", "conf.json", "d/b.txt", "d/c.txt",
                                             "ref.txt"]
    ref = art.get_entry("ref.txt")
    assert ref.ref_target() == ref.ref_url() == f"file://{src}/a.txt"
    stored = art.get_entry("d/b.txt")
    assert stored.ref_url() == "artifactfs://p/m:v0/d/b.txt"
    with pytest.raises(UsageError, match="not a reference"):
        stored.ref_target()
    assert Path(stored.download(root=str(tmp_path / "one"))).read_text() == "B"
    assert len(art.manifest) == 5 and art.manifest.get_entry_by_path("a.txt") is not None
    root = tmp_path / "full"
    art.download(root=str(root), skip_cache=True)
    art.verify(str(root))
    (root / "a.txt").write_text("changed")
    (root / "junk").write_text("x")
    with pytest.raises(ValueError, match="1 changed, 1 extra"):
        art.verify(str(root))
    art.checkout(str(root))
    art.verify(str(root))
    os.unlink(src / "a.txt")  # the reference's source is gone
    with pytest.raises(Exception, match="reference changed"):
        art.download(root=str(tmp_path / "strict"))
    out = Path(art.download(root=str(tmp_path / "lenient"), allow_missing_references=True))
    assert not (out / "ref.txt").exists() and (out / "d" / "c.txt").exists()
    one = run.log_artifact(str(src / "d" / "c.txt"), name="single", type="dataset")
    assert Path(one.file(str(tmp_path / "f"))).read_text() == "c"


def test_mutable_policy_refuses_a_file_changed_after_adding(store: Path, tmp_path: Path) -> None:
    src = files(tmp_path, **{"a.txt": "a"})
    run = artifactfs.init(project="p")
    art = artifactfs.Artifact("pol", "dataset")
    art.add_file(str(src / "a.txt"))
    (src / "a.txt").write_text("changed!")
    with pytest.raises(UsageError, match="changed after it was added"):
        run.log_artifact(art)
    art2 = artifactfs.Artifact("pol", "dataset")
    art2.add_file(str(src / "a.txt"), policy="immutable")
    (src / "a.txt").write_text("changed again")
    run.log_artifact(art2)  # immutable: the caller promised not to change it


def test_delete_hint_and_recreating_with_another_type(store: Path) -> None:
    run = artifactfs.init(project="p")
    art = log(run, "x", a="1")
    art.aliases.append("best")
    art.save()
    with pytest.raises(UsageError, match="delete_aliases=True"):
        art.delete()
    art.delete(delete_aliases=True)
    assert art.state == "DELETED"
    log(run, "y", a="1")
    api = artifactfs.Api(overrides={"project": "p"})
    with pytest.raises(TypeConflict):
        log(run, "y", "model", a="2")
    api.artifact_collection("dataset", "y").delete()
    assert log(run, "y", "model", a="2").type == "model"
    assert [c.name for c in api.artifact_collections("p", "model")] == ["y"]


def test_collections_and_discovery(store: Path) -> None:
    run = artifactfs.init(project="p")
    log(run, "a", a="1")
    log(run, "b", "model", b="1")
    api = artifactfs.Api(overrides={"project": "p"})
    assert [p.name for p in api.projects()] == ["p"]
    assert [t.name for t in api.artifact_types()] == ["dataset", "model"]
    assert [c.name for c in api.artifact_type("model").collections()] == ["b"]
    assert [c.name for c in api.artifact_collections("p", "dataset")] == ["a"]
    assert api.artifact_collection_exists("a", "dataset")
    assert not api.artifact_collection_exists("a", "model")
    assert not api.artifact_collection_exists("no such!", "model")
    col = api.artifact_collection("dataset", "a")
    assert col.is_sequence() and [v.version for v in col.artifacts()] == ["v0"]
    col.name = "renamed"
    assert [v.version for v in col.versions()] == ["v0"]  # not saved yet: still the old name
    col.description, col.tags = "about a", ["gold"]
    col.save()
    assert api.artifact("renamed").collection.description == "about a"
    assert [c.name for c in api.artifact_collections(tags="gold")] == ["renamed"]
    assert not api.artifact_exists("p/a")
    col.change_type("model")
    assert api.artifact("renamed").type == "model"
    v = api.artifact("b")
    v.tags.append("prod")
    v.save()
    assert [a.id for a in api.artifacts(tags="prod")] == ["p/b:v0"]
    assert [a.id for a in api.artifacts("model", "b", tags=["prod"])] == ["p/b:v0"]


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_registry(where: str, store: Path, tmp_path: Path, request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "s3":
        monkeypatch.setenv("ARTIFACTFS_STORE", request.getfixturevalue("s3_store_uri"))
    src = files(tmp_path, **{"model.pt": "w1"})
    run = artifactfs.init(project="p")
    m = run.log_model(str(src / "model.pt"), name="net")
    assert m.type == "model"
    link = run.link_artifact(m, "model-registry/best-net", aliases=["staging"])
    assert link.is_link and link.id == "registry/best-net:v0" and link.source_name == "net:v0"
    assert link.source_artifact.id == "p/net:v0" and link.source_project == "p"
    assert [a.id for a in m.linked_artifacts] == ["registry/best-net:v0"]
    path = artifactfs.use_model("wandb-registry-model/best-net:staging")
    assert Path(path).read_text() == "w1"
    (src / "model.pt").write_text("w2")
    linked2 = run.link_model(str(src / "model.pt"), "best-net", name="net", aliases=["staging"])
    assert linked2.id == "registry/best-net:v1"
    api = artifactfs.Api()
    assert [v.version for v in api.artifact_versions("model", "registry/best-net")] == [
        "v0", "v1"]
    assert api.artifact("registry/best-net:staging").source_version == "v1"
    m.link("best-net")  # linked already: the same link
    assert len(api.artifact_versions("model", "registry/best-net")) == 2
    api.artifact("registry/best-net:v0").unlink()
    assert [v.version for v in api.artifact_versions("model", "registry/best-net")] == ["v1"]
    with pytest.raises(UsageError, match="not a link"):
        m.unlink()
    with pytest.raises(UsageError, match="use_model needs"):
        log(run, "data", a="1")
        run.use_model("data")


def test_gcs_unreachable_says_gcs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTFS_GCS_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("ARTIFACTFS_S3_RETRY_SECONDS", "0.3")
    monkeypatch.setenv("GCS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("GCS_SECRET_ACCESS_KEY", "y")
    art = artifactfs.Artifact("g", "dataset")
    with pytest.raises(StoreUnavailable, match="GCS unreachable"):
        art.add_reference("gs://bucket/key")


def test_ttl_and_tables(store: Path) -> None:
    run = artifactfs.init(project="p")
    t = artifactfs.Table(columns=["x"], data=[[1]])
    t.add_data(2)
    art = artifactfs.Artifact("tab", "dataset")
    art.add(t, "t")
    art.ttl = timedelta(days=3)
    run.log_artifact(art)
    assert art.get("t") == artifactfs.Table(columns=["x"], data=[[1], [2]])
    assert artifactfs.Api().artifact("p/tab").ttl == timedelta(days=3)
