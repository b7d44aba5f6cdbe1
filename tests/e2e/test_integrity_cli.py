"""Integrity under faults through the command line (issue 11): gc against damage, damaged or
hostile records and trees, long names, huge directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

from deeptree import rm_deep
from test_cli import fail, run


def put_tree(tmp_path: Path, store: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    (src / "top.txt").write_text("top")
    run(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    return src


def test_gc_fails_and_deletes_nothing_when_a_live_tree_is_damaged(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = put_tree(tmp_path, store)
    (src / "top.txt").write_text("v1")
    run(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    run(store, "delete", "p/a:v1")
    objects = sorted(p for p in (store / "objects").rglob("*") if p.is_file())
    victim = next(p for p in objects if p.read_bytes().startswith(b'{"e":[["a.txt"'))
    victim.unlink()
    p = run(store, "gc", "--grace", "0", "--force", ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    digest = victim.parent.name + victim.name
    assert digest in p.stderr and "p/a:v0" in p.stderr and "deleted nothing" in p.stderr
    assert sorted(p for p in (store / "objects").rglob("*") if p.is_file()) == \
        [o for o in objects if o != victim]


def test_gc_with_a_short_grace_needs_force(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put_tree(tmp_path, store)
    err = fail(store, "gc", "--grace", "0.5", code=1)
    assert "--force" in err
    p = run(store, "gc", "--grace", "0", "--force")
    assert "warning: grace period 0 h" in p.stderr and "removed 0" in p.stdout


def three_versions(tmp_path: Path, store: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / "f.txt").write_text(f"v{i}")
        run(store, "put", str(src), "--name", "p/a", "--type", "dataset", "--alias", f"a{i}")


def vrec(store: Path, n: int) -> Path:
    return store / "artifacts" / "p" / "a" / "versions" / f"{n:010d}.json"


def test_versions_names_damaged_records_and_lists_the_others(tmp_path: Path) -> None:
    """Issue 11, items 6 and 12: garbage in one version record, wrong field types in another,
    garbage in one alias record: versions lists the rest and warns, naming each."""
    store = tmp_path / "store"
    three_versions(tmp_path, store)
    vrec(store, 0).write_text(vrec(store, 0).read_text().replace('"size":', '"size":"huge",'
                                                                 '"x":'))
    vrec(store, 1).write_text("{garbage")
    (store / "artifacts" / "p" / "a" / "aliases" / "a2.json").write_text("nope")
    p = run(store, "versions", "p/a")
    assert [line.split()[0] for line in p.stdout.splitlines()] == ["v2"]
    assert "latest" in p.stdout and "Traceback" not in p.stderr
    warnings = p.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: ") for w in warnings)
    assert "0000000000.json" in warnings[0] and "'size'" in warnings[0]
    assert "0000000001.json" in warnings[1] and "a2" in warnings[2]
    for args in (("info", "p/a:v1"), ("ls", "p/a:v0"), ("get", "p/a:a2"), ("info", "p/a:v0")):
        err = fail(store, *args)
        assert "malformed" in err
    assert run(store, "info", "p/a:v2").stdout.startswith("project")
    assert run(store, "ls", "p/a").stdout.split()[-1] == "f.txt"


def test_get_refuses_a_record_pointing_at_another_tree(tmp_path: Path) -> None:
    store = tmp_path / "store"
    three_versions(tmp_path, store)
    doc = json.loads(vrec(store, 1).read_text())
    doc["root"] = json.loads(vrec(store, 0).read_text())["root"]
    vrec(store, 1).write_text(json.dumps(doc))
    err = fail(store, "get", "p/a:v1", "--root", str(tmp_path / "out"))
    assert "p/a:v1 does not match its root tree" in err
    assert not (tmp_path / "out" / "f.txt").exists()


def test_ls_and_get_of_a_tree_2000_deep(tmp_path: Path) -> None:
    """Issue 11, item 11: no RecursionError; ls lists it, get writes it (deeper than
    PATH_MAX below the destination)."""
    from artifactfs import model
    from artifactfs.repo import Repo

    store = tmp_path / "store"
    repo = Repo(str(store))
    digest = model.sha256_hex(b"bottom")
    repo.store.put_if_absent(model.object_key(digest), b"bottom")
    deep = "/".join(["d"] * 2000) + "/f"
    repo.commit_entries("p", "deep", "dataset", {deep: model.file_entry(6, digest)})
    p = run(store, "ls", "p/deep")
    assert p.stdout.split()[-1] == deep and "Traceback" not in p.stderr
    try:
        p = run(store, "get", "p/deep", "--root", str(tmp_path / "out"))
        assert (tmp_path / "out" / "d").is_dir() and "Traceback" not in p.stderr
    finally:
        rm_deep(tmp_path / "out")


def test_get_of_names_up_to_255_bytes(tmp_path: Path) -> None:
    """Issue 11, item 13: temp names fit NAME_MAX whatever the real name's length."""
    store = tmp_path / "store"
    src = tmp_path / "src"
    src.mkdir()
    names = ["x" * 255, "é" * 127, "y" * 241]
    for n in names:
        (src / n).write_text(n)
    run(store, "put", str(src), "--name", "p/long", "--type", "dataset")
    out = tmp_path / "out"
    run(store, "get", "p/long", "--root", str(out))
    assert sorted(os.listdir(out)) == sorted(names)
    assert all((out / n).read_text() == n for n in names)
