"""Lineage captured from reads (issue 15): a process that reads a version through the mount
while it belongs to a run (ARTIFACTFS_RUN in its environment, or a run started by the API) is
recorded as a consumer, exactly once per (run, version)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from artifactfs.catalog import Catalog
from artifactfs.store import open_store


def used_by(store: str, version: int) -> list[str]:
    cat = Catalog(open_store(store))
    rec = cat.get_version("p", "data", version)[0]
    return sorted(f"{r.project}/{r.id}" for r in cat.used_by(rec))


def wait_used(store: str, version: int, want: list[str]) -> None:
    deadline = time.monotonic() + 10
    while used_by(store, version) != want:
        assert time.monotonic() < deadline, (used_by(store, version), want)
        time.sleep(0.05)


def test_reads_under_a_run_are_recorded_once_per_version(store_uri: str, tmp_path: Path,
                                                         mount: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    env = dict(os.environ, ARTIFACTFS_STORE=store_uri)
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "artifactfs", "put", str(src), "--name", "p/data",
                        "--type", "dataset"], env=env, check=True, capture_output=True)
        (src / "f0.txt").write_text("changed\n")
    mnt = mount(store_uri, tmp_path / "mnt")
    v0 = mnt / "p" / "data" / "v0"
    subprocess.run(["cat", str(v0 / "f1.txt")], check=True, capture_output=True)  # no run
    run_env = dict(os.environ, ARTIFACTFS_RUN="p/train-1")
    for i in range(5):  # a process tree: sh and its cat children
        subprocess.run(["sh", "-c", f"cat {v0}/f{i}.txt; cat {v0}/f{i}.txt >/dev/null"],
                       env=run_env, check=True, capture_output=True)
    wait_used(store_uri, 0, ["p/train-1"])
    assert used_by(store_uri, 1) == []  # not read
    cat = Catalog(open_store(store_uri))
    assert cat.get_run("p", "train-1").id == "train-1"  # created for the reader
    ins = cat.run_artifacts(cat.get_run("p", "train-1"), "inputs")
    assert [str(r) for r in ins] == ["p/data:v0"]

    code = ("import artifactfs, sys\n"
            "run = artifactfs.init(project='p', job_type='eval')\n"
            f"open({str(mnt / 'p' / 'data' / 'latest' / 'f2.txt')!r}).read()\n"
            "print(run.id)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    wait_used(store_uri, 1, [f"p/{r.stdout.strip()}"])
    bad = dict(os.environ, ARTIFACTFS_RUN="../etc")
    subprocess.run(["cat", str(v0 / "f3.txt")], env=bad, check=True, capture_output=True)
    time.sleep(0.3)
    assert used_by(store_uri, 0) == ["p/train-1"]


def test_a_run_in_a_project_the_reader_may_not_write_is_not_recorded(
        tmp_path: Path, mount: Any, users: Any) -> None:
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x\n")
    env = dict(os.environ, ARTIFACTFS_STORE=store)
    subprocess.run([sys.executable, "-m", "artifactfs", "put", str(src), "--name", "p/data",
                    "--type", "dataset"], env=env, check=True, capture_output=True)
    writers = users.group()
    outsider = users.make()
    cfg = tmp_path / "xdg" / "artifactfs" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[projects.secret]\nwriters = ["{writers}"]\n')
    top = Path(tempfile.mkdtemp(prefix="afs-lineage-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        mnt = mount(store, top / "mnt", "--allow-other",
                    env=dict(env, XDG_CONFIG_HOME=str(tmp_path / "xdg")))
        _outsider_reads(store, mnt, users, outsider)
    finally:
        subprocess.run(["umount", "-l", str(top / "mnt")], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def _outsider_reads(store: str, mnt: Path, users: Any, outsider: Any) -> None:
    f = mnt / "p" / "data" / "v0" / "f.txt"
    r = users.run(outsider, ["cat", str(f)], env={"ARTIFACTFS_RUN": "secret/r1"})
    assert r.returncode == 0 and r.stdout == "x\n", r.stderr
    time.sleep(0.5)
    assert used_by(store, 0) == []
    cat = Catalog(open_store(store))
    assert not list(cat.store.list("runs/secret/"))
