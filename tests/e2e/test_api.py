"""The wandb-shaped Python API (SPEC §6) end to end on a local store."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

import artifactfs
from artifactfs.errors import NotFound, TypeConflict, UsageError


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    s = tmp_path / "store"
    monkeypatch.setenv("ARTIFACTFS_STORE", str(s))
    monkeypatch.chdir(tmp_path)
    return s


def make_src(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(b"png1")
    (tmp_path / "images" / "2.png").write_bytes(b"png2")
    (tmp_path / "train.csv").write_text("a,b\n")
    (tmp_path / "old.csv").write_text("old\n")
    return tmp_path


def test_spec_section_6_flow(store: Path, tmp_path: Path) -> None:
    src = make_src(tmp_path)
    run = artifactfs.init(project="vision", job_type="train")
    art = artifactfs.Artifact("cats", type="dataset", description="cute", metadata={"n": 3})
    art.add_file(str(src / "train.csv"), name="data/train.csv")
    art.add_file(str(src / "old.csv"), name="data/old.csv")
    art.add_dir(str(src / "images"), name="images")
    with art.new_file("hello.txt") as f:
        f.write("hi")
    run.log_artifact(art, aliases=["best"])
    assert art.version == "v0" and art.name == "cats:v0"
    assert set(art.aliases) == {"latest", "best"}

    used = run.use_artifact("cats:latest")
    root = used.download(path_prefix="images/")
    assert sorted(p.name for p in (Path(root) / "images").iterdir()) == ["1.png", "2.png"]
    assert not (Path(root) / "hello.txt").exists()
    entry = used.get_path("data/train.csv")
    assert Path(entry.download()).read_text() == "a,b\n"
    assert entry.ref is None and entry.digest == hashlib.sha256(b"a,b\n").hexdigest()

    draft = used.new_draft()
    draft.remove("data/old.csv")
    (tmp_path / "new.csv").write_text("new")
    draft.add_file(str(tmp_path / "new.csv"))
    run.log_artifact(draft)
    assert draft.version == "v1"
    files = {e.path for e in draft.entries()}
    assert files == {"data/train.csv", "images/1.png", "images/2.png", "hello.txt", "new.csv"}

    api = artifactfs.Api()
    a = api.artifact("vision/cats:v0")
    a.description = "changed"
    a.metadata["k"] = 1
    a.aliases.append("prod")
    a.ttl = timedelta(days=30)
    a.save()
    b = api.artifact("vision/cats:prod")
    assert b.version == "v0" and b.description == "changed" and b.metadata == {"n": 3, "k": 1}
    assert b.ttl == timedelta(days=30)
    assert [x.version for x in api.artifact_versions("dataset", "vision/cats")] == ["v0", "v1"]
    col = api.artifact_collection("dataset", "vision/cats")
    assert col.type == "dataset" and "best" in col.aliases
    assert b.logged_by() is not None and b.logged_by().id == run.id  # type: ignore[union-attr]
    assert [r.id for r in b.used_by()] == [run.id]

    with pytest.raises(UsageError):
        b.delete()  # holds aliases
    b.delete(delete_aliases=True)
    assert [x.version for x in api.artifact_versions("dataset", "vision/cats")] == ["v1"]
    with pytest.raises(NotFound):
        api.artifact("vision/cats:v0")


def test_versions_logged_in_a_loop_are_in_order(store: Path, tmp_path: Path) -> None:
    run = artifactfs.init(project="p")
    for i in range(5):
        art = artifactfs.Artifact("loop", type="dataset")
        with art.new_file("i.txt") as f:
            f.write(str(i))
        run.log_artifact(art)
        assert art.version == f"v{i}"


def test_same_content_gives_the_same_version(store: Path, tmp_path: Path) -> None:
    run = artifactfs.init(project="p")
    versions = []
    for _ in range(2):
        art = artifactfs.Artifact("same", type="dataset")
        with art.new_file("a.txt") as f:
            f.write("same")
        run.log_artifact(art)
        versions.append(art.version)
    assert versions == ["v0", "v0"]


def test_api_errors(store: Path, tmp_path: Path) -> None:
    run = artifactfs.init(project="p")
    art = artifactfs.Artifact("x", type="dataset")
    with art.new_file("a.txt") as f:
        f.write("a")
    run.log_artifact(art)
    other = artifactfs.Artifact("x", type="model")
    with other.new_file("b.txt") as f:
        f.write("b")
    with pytest.raises(TypeConflict):
        run.log_artifact(other)
    with pytest.raises(UsageError):
        art.add_file(str(tmp_path))  # logged: immutable
    with pytest.raises(UsageError):
        artifactfs.Artifact("bad name", type="dataset")
    fresh = artifactfs.Artifact("y", type="dataset")
    with pytest.raises(UsageError):
        fresh.add_file(str(tmp_path / "missing"))
    with pytest.raises(NotFound):
        run.use_artifact("nothing:latest")


def test_distributed_writers_and_finish(store: Path, tmp_path: Path) -> None:
    runs = [artifactfs.init(project="p", job_type="shard") for _ in range(3)]
    for i, run in enumerate(runs[:2]):
        art = artifactfs.Artifact("shards", type="dataset")
        with art.new_file(f"shard-{i}.txt") as f:
            f.write(f"shard {i}")
        with art.new_file("common.txt") as f:
            f.write("same everywhere")
        run.upsert_artifact(art, distributed_id="g1")
    final = artifactfs.Artifact("shards", type="dataset")
    with final.new_file("shard-2.txt") as f:
        f.write("shard 2")
    runs[2].finish_artifact(final, distributed_id="g1")
    assert final.version == "v0"
    assert {e.path for e in final.entries()} == {"shard-0.txt", "shard-1.txt", "shard-2.txt",
                                                 "common.txt"}
    late = artifactfs.Artifact("shards", type="dataset")
    with late.new_file("late.txt") as f:
        f.write("late")
    with pytest.raises(artifactfs.ArtifactfsError, match="already finished"):
        runs[0].upsert_artifact(late, distributed_id="g1")


def test_distributed_conflict_names_the_paths(store: Path, tmp_path: Path) -> None:
    a, b = artifactfs.init(project="p"), artifactfs.init(project="p")
    for run, text in ((a, "one"), (b, "two")):
        art = artifactfs.Artifact("clash", type="dataset")
        with art.new_file("same/path.txt") as f:
            f.write(text)
        run.upsert_artifact(art, distributed_id="g2")
    with pytest.raises(artifactfs.ArtifactfsError, match=r"same/path\.txt"):
        a.finish_artifact(artifactfs.Artifact("clash", type="dataset"), distributed_id="g2")


def test_a_finish_that_died_half_way_can_be_run_again(store: Path, tmp_path: Path) -> None:
    from artifactfs import distributed
    from artifactfs.repo import Repo
    run = artifactfs.init(project="p")
    art = artifactfs.Artifact("again", type="dataset")
    with art.new_file("a.txt") as f:
        f.write("a")
    run.upsert_artifact(art, distributed_id="g3")
    repo = Repo(str(store))
    # what a finisher killed after its marker leaves behind
    repo.store.put_if_absent("drafts/p/again/g3/finished.json",
                             json.dumps({"writer": run.id, "at": "x"}).encode())
    rec, created = distributed.finish(repo, "p", "again", "g3", "dataset", {}, writer=run.id)
    assert created and rec.version == 0
    other = artifactfs.init(project="p")
    with pytest.raises(artifactfs.ArtifactfsError, match="already finished"):
        distributed.finish(repo, "p", "again", "g3", "dataset", {}, writer=other.id)
