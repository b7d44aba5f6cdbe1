"""CLI changes show in this node's mounts at once, not only after the refresh interval."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.mounted


def cli(store: Path, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "artifactfs", "--store", str(store), *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_delete_alias_and_put_appear_in_the_mount_at_once(
        tmp_path: Path, mount: Callable[..., Path]) -> None:
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("zero")
    cli(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    (src / "a.txt").write_text("one")
    cli(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    mnt = mount(store, tmp_path / "mnt", "--refresh", "3600")  # only a notice can update it
    art = mnt / "p" / "a"
    assert sorted(os.listdir(art)) == ["latest", "v0", "v1"]
    cli(store, "alias", "add", "p/a:v0", "best")
    assert os.readlink(art / "best") == "v0"
    cli(store, "delete", "p/a:v1")
    assert sorted(os.listdir(art)) == ["best", "latest", "v0"]
    assert os.readlink(art / "latest") == "v0"
    assert (art / "latest" / "a.txt").read_text() == "zero"
    (src / "a.txt").write_text("two")
    cli(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    assert os.readlink(art / "latest") == "v2"
    cli(store, "alias", "rm", "p/a", "best")
    assert not (art / "best").exists()


def test_plain_mkdir_makes_a_draft_of_an_existing_artifact(
        tmp_path: Path, mount: Callable[..., Path]) -> None:
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    cli(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    mnt = mount(store, tmp_path / "mnt")
    draft = mnt / "drafts" / "p" / "a" / "d1"
    draft.mkdir()  # no -p: drafts/p/ and drafts/p/a/ exist because p/a does
    assert (draft / "a.txt").read_text() == "a"
    (draft / "b.txt").write_text("b")
    assert cli(store, "commit", str(draft)).strip().splitlines()[-1] == "p/a:v1"
    assert sorted(os.listdir(mnt / "p" / "a" / "latest")) == ["a.txt", "b.txt"]
    with pytest.raises(FileNotFoundError):
        (mnt / "drafts" / "nosuch" / "x" / "d").mkdir()  # a new artifact takes mkdir -p
