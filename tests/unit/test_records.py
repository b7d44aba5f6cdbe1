"""Damaged and hostile records (issue 11, items 4, 6, 12): every record read is validated and
a bad one named; one bad record costs only itself; a record must match its tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from artifactfs.errors import IntegrityError
from artifactfs.repo import Repo


def three_versions(tmp_path: Path, store_uri: str) -> Repo:
    repo = Repo(store_uri)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / "f.txt").write_text(f"v{i}")
        repo.put_path(str(src), "p", "a", "dataset", aliases=[f"a{i}"])
    return repo


def vkey(n: int) -> str:
    return f"artifacts/p/a/versions/{n:010d}.json"


def record(repo: Repo, n: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(repo.store.get(vkey(n)))
    return doc


BAD_FIELDS = [("size", "huge"), ("size", -1), ("file_count", 2**70), ("version", "1"),
              ("created_at", "yesterday"), ("ttl_days", "x"), ("ttl_days", -3),
              ("metadata", [1]), ("root", "abc"), ("digest", None), ("project", 5),
              ("run", 7), ("base", -2), ("deleted_at", 12), ("description", {}),
              ("type", "no such/type"), ("size", True)]


@pytest.mark.parametrize(("key", "value"), BAD_FIELDS)
def test_a_record_with_a_bad_field_is_named(tmp_path: Path, key: str, value: Any) -> None:
    repo = three_versions(tmp_path, str(tmp_path / "store"))
    doc = record(repo, 1)
    doc[key] = value
    repo.store.put(vkey(1), json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match=rf"{vkey(1)}.*'{key}'"):
        repo.catalog.get_version("p", "a", 1)


def test_one_damaged_version_or_alias_record_costs_only_itself(tmp_path: Path,
                                                               store_uri: str) -> None:
    repo = three_versions(tmp_path, store_uri)
    repo.store.put(vkey(1), b"{garbage")
    repo.store.put("artifacts/p/a/aliases/a0.json", b'{"version": "zero"}')
    cat = repo.catalog
    damaged: dict[int, str] = {}
    assert [r.version for r in cat.versions("p", "a", damaged=damaged)] == [0, 2]
    assert list(damaged) == [1] and vkey(1) in damaged[1]
    with pytest.raises(IntegrityError):
        cat.versions("p", "a")  # strict unless asked
    bad: dict[str, str] = {}
    assert cat.aliases("p", "a", bad) == {"a1": 1, "a2": 2} and list(bad) == ["a0"]
    assert repo.resolve("p/a:v0").version == 0 and repo.resolve("p/a").version == 2
    assert repo.resolve("p/a:a2").version == 2
    with pytest.raises(IntegrityError, match=vkey(1)):
        repo.resolve("p/a:v1")
    with pytest.raises(IntegrityError, match="a0"):
        repo.resolve("p/a:a0")
    warnings: list[str] = []
    docs = repo.versions_json("p", "a", warnings)
    assert [d["version"] for d in docs] == [0, 2] and docs[1]["aliases"] == ["latest", "a2"]
    assert len(warnings) == 2 and vkey(1) in warnings[0] and "a0" in warnings[1]
    # the damaged record is the highest: latest is unknown, never an older version
    repo.store.put(vkey(1), json.dumps(record(repo, 0) | {"version": 1}).encode())
    repo.store.put(vkey(2), b"[]")
    with pytest.raises(IntegrityError, match="latest"):
        repo.resolve("p/a")
    warnings = []
    docs = repo.versions_json("p", "a", warnings)
    assert [d["aliases"] for d in docs] == [[], ["a1"]]  # no "latest" on v1
    assert any("latest is unknown" in w for w in warnings)
    assert repo.version_json(repo.resolve("p/a:v1"))["aliases"] == ["a1"]


def test_a_record_pointing_at_another_tree_is_refused(tmp_path: Path, store_uri: str) -> None:
    """Issue 11, item 4: v1's record with v0's root (its digest unchanged) is not v1."""
    repo = three_versions(tmp_path, store_uri)
    doc = record(repo, 1)
    doc["root"] = record(repo, 0)["root"]
    repo.store.put(vkey(1), json.dumps(doc).encode())
    fresh = Repo(store_uri)
    rec = fresh.resolve("p/a:v1")
    for read in (lambda: list(fresh.entries(rec)), lambda: fresh.entry(rec, "f.txt"),
                 lambda: fresh.download(rec, str(tmp_path / "out"))):
        with pytest.raises(IntegrityError, match="p/a:v1 does not match its root"):
            read()
    assert not (tmp_path / "out" / "f.txt").exists()
    assert fresh.entry(fresh.resolve("p/a:v0"), "f.txt") is not None
    # totals that lie are refused too
    doc = record(repo, 2)
    doc["file_count"] = 5
    repo.store.put(vkey(2), json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="does not match"):
        list(Repo(store_uri).entries(Repo(store_uri).resolve("p/a:v2")))


def test_the_api_lists_the_versions_it_can_read(tmp_path: Path, caplog: Any) -> None:
    import artifactfs

    store = str(tmp_path / "store")
    repo = three_versions(tmp_path, store)
    repo.store.put(vkey(2), b"{garbage")
    api = artifactfs.Api(overrides={"store": store, "project": "p"})
    col = api.artifact_collection("dataset", "a")
    assert [a.version for a in col.versions()] == ["v0", "v1"]
    assert "0000000002.json" in caplog.text
    assert "latest" not in col.aliases  # v2 may be the latest: unknown
    assert api.artifact("p/a:v1").version == "v1"
