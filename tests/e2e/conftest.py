"""Fixtures for end-to-end tests: mounts made with the real CLI, always unmounted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Mount = Callable[..., Path]


def unmount(mnt: Path) -> None:
    """``artifactfs unmount``, then lazy unmounts until the kernel lets go."""
    subprocess.run([sys.executable, "-m", "artifactfs", "unmount", str(mnt)],
                   capture_output=True, timeout=60)
    deadline = time.monotonic() + 10
    while os.path.ismount(mnt) and time.monotonic() < deadline:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        time.sleep(0.2)


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    """``mount(store, mnt, *flags, env=None)`` mounts with the CLI (cache under tmp_path
    unless ``--cache-dir`` is given); every mount is unmounted at teardown, pass or fail."""
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        pytest.skip("needs /dev/fuse as root")
    done: list[Path] = []

    def do(store: str | Path, mnt: Path, *flags: str, env: dict[str, str] | None = None) -> Path:
        mnt.mkdir(exist_ok=True)
        extra = [] if "--cache-dir" in flags else ["--cache-dir", str(tmp_path / f"cache-{mnt.name}")]
        done.append(mnt)
        p = subprocess.run([sys.executable, "-m", "artifactfs", "--store", str(store), "mount",
                            str(mnt), *extra, *flags], capture_output=True, text=True,
                           timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        return mnt

    yield do
    for mnt in done:
        unmount(mnt)
