"""Validation of names, paths and refs (SPEC §2)."""

from __future__ import annotations

import pytest

from artifactfs.errors import InvalidName
from artifactfs.names import check_alias, check_path, check_project, normalize_path, parse_ref


@pytest.mark.parametrize("bad", ["", "-x", ".x", "a/b", "a b", "x" * 129, "é", "a:b"])
def test_bad_names(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_project(bad)


def test_reserved_project_and_version_like_alias() -> None:
    with pytest.raises(InvalidName):
        check_project("drafts")
    with pytest.raises(InvalidName):
        check_alias("v12")
    assert check_alias("v12a") == "v12a"


@pytest.mark.parametrize("bad", ["/a", "a/../b", "..", "a//b", "./a", "a\0b", "a/" + "x" * 256,
                                 "/".join(["abcdefgh"] * 500)])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_path(bad)


def test_normalize_path() -> None:
    assert normalize_path("./a//b/") == "a/b"


def test_parse_ref() -> None:
    r = parse_ref("vision/cats:v3")
    assert (r.project, r.name, r.ref, r.version) == ("vision", "cats", "v3", 3)
    assert parse_ref("vision/cats").ref == "latest"
    assert parse_ref("cats:best", default_project="p").project == "p"
    for bad in ("cats", "a/b/c", "a/b:", "a/b:v-1x/", "drafts/x", "a/b:bad alias"):
        with pytest.raises(InvalidName):
            parse_ref(bad)
