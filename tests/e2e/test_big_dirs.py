"""Directories bigger than one tree node (split into parts) through the CLI and a real mount:
listings, reads, drafts and commits that rewrite only the parts around a change, and digests
that equal those of a fresh ``put`` of the same files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from artifactfs import model

pytestmark = pytest.mark.mounted
FILES = model.SPLIT_AT + 400


def cli(store: Path, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "artifactfs", "--store", str(store), *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def objects(store: Path) -> set[str]:
    return {str(p) for p in (store / "objects").rglob("*") if p.is_file()}


def test_a_big_directory_lists_reads_and_commits_part_by_part(
        tmp_path: Path, mount: Callable[..., Path]) -> None:
    store, src = tmp_path / "store", tmp_path / "src"
    (src / "flat").mkdir(parents=True)
    for i in range(FILES):
        (src / "flat" / f"f{i:05d}.txt").write_text(f"file {i}\n")
    (src / "top.txt").write_text("top\n")
    cli(store, "put", str(src), "--name", "p/big", "--type", "dataset")
    mnt = mount(store, tmp_path / "mnt")
    v0 = mnt / "p" / "big" / "v0" / "flat"
    names = os.listdir(v0)
    assert len(names) == FILES and sorted(names) == sorted(os.listdir(src / "flat"))
    assert (v0 / "f04321.txt").read_text() == "file 4321\n"
    assert (v0 / "f00000.txt").read_text() == "file 0\n"

    draft = mnt / "drafts" / "p" / "big" / "d"
    draft.mkdir()
    (draft / "flat" / "f00007.txt").write_text("changed\n")
    (draft / "flat" / "new.txt").write_text("new\n")
    os.unlink(draft / "flat" / f"f{FILES - 1:05d}.txt")
    before = objects(store)
    assert cli(store, "commit", str(draft)).split()[-1] == "p/big:v1"
    written = objects(store) - before
    # the new file contents, a few parts, the index node, the root: not every part again
    assert len(written) < 12, sorted(written)

    v1 = mnt / "p" / "big" / "v1" / "flat"
    assert (v1 / "f00007.txt").read_text() == "changed\n"
    assert (v1 / "new.txt").read_text() == "new\n"
    assert len(os.listdir(v1)) == FILES

    # the same files put from scratch: the same version digest
    (src / "flat" / "f00007.txt").write_text("changed\n")
    (src / "flat" / "new.txt").write_text("new\n")
    os.unlink(src / "flat" / f"f{FILES - 1:05d}.txt")
    cli(store, "put", str(src), "--name", "p/again", "--type", "dataset")
    latest = [json.loads(cli(store, "versions", ref, "--json"))[-1] for ref in ("p/big", "p/again")]
    assert latest[0]["digest"] == latest[1]["digest"]
    assert latest[0]["file_count"] == latest[1]["file_count"] == FILES + 1
