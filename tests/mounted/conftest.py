"""Fixtures for real FUSE mounts in temp dirs.

``mounter`` starts ``artifactfs mount`` (a real daemon process, exactly as a user would) and
always cleans up in teardown, even when the test failed or killed the daemon: ``artifactfs
unmount``, then ``fusermount3 -u -z`` / ``umount -l``, then SIGKILL of a daemon still alive.
Every test gets its own store, cache and config directories.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mounthelp import BIG, Mount

pytestmark = pytest.mark.mounted


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    usable = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None
    for item in items:
        if "tests/mounted" in str(item.fspath):
            item.add_marker(pytest.mark.mounted)
            if not usable:
                item.add_marker(pytest.mark.skip(reason="needs /dev/fuse and fusermount3"))


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("msource")
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    (root / "data" / "deep" / "x.txt").write_text("deep\n")
    (root / "empty").mkdir()
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "README").write_text("hello\n")
    os.symlink("README", root / "link")
    (root / "many").mkdir()
    for i in range(200):
        (root / "many" / f"f{i:03d}").write_bytes(os.urandom(i * 37))
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return str(root)


@pytest.fixture
def env(tmp_path: Any) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("ARTIFACTFS_STORE", None)
    e.pop("NOTIFY_SOCKET", None)
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    e["ARTIFACTFS_STORE"] = str(tmp_path / "store")
    return e


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "artifactfs", *args], env=env, text=True,
                           capture_output=True, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"artifactfs {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}\n{r.stderr}")
        return r

    return run


@pytest.fixture
def mounter(tmp_path: Any, env: dict[str, str]) -> Iterator[Callable[..., Mount]]:
    made: list[Mount] = []

    def make(name: str = "mnt", *extra: str, start: bool = True) -> Mount:
        m = Mount(str(tmp_path / name), env["ARTIFACTFS_STORE"], str(tmp_path / "cache"), env)
        made.append(m)
        if start:
            m.start(*extra)
        return m

    yield make
    for m in made:
        m.cleanup()
