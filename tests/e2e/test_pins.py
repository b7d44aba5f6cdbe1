"""Reproducible runs (issue 15): lock files pin aliases for get, the API and the mount; dated
refs and dated names in the mount pick the version an alias pointed at, at a time."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from artifactfs.lockfile import Lock


def cli(store: str, *args: str, ok: bool = True, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, ARTIFACTFS_STORE=store, **(env or {}))
    e.pop("ARTIFACTFS_LOCK", None) if not env or "ARTIFACTFS_LOCK" not in env else None
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True,
                       text=True, env=e, timeout=120, cwd=cwd)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def put(store: str, src: Path, text: str, *extra: str) -> str:
    (src / "data.txt").write_text(text)
    return cli(store, "put", str(src), "--name", "p/cats", "--type", "dataset",
               *extra).stdout.split()[-1]


def stamp() -> str:
    time.sleep(0.02)
    t = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.02)
    return t


def test_a_lock_file_pins_latest_across_a_later_commit(store_uri: str, tmp_path: Path,
                                                       mount: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    put(store_uri, src, "first\n", "--alias", "best")
    lockf = tmp_path / "artifacts.lock"
    cli(store_uri, "lock", "p/cats", "p/cats:best", "-o", str(lockf))
    lock = Lock.load(str(lockf))
    assert sorted(p.label for p in lock.pins.values()) == ["p/cats:best", "p/cats:latest"]
    assert 'alias = "latest"' in lockf.read_text() and "version = 0" in lockf.read_text()
    put(store_uri, src, "second\n")  # latest moves to v1

    got = cli(store_uri, "get", "p/cats", "--lock", str(lockf), "--root",
              str(tmp_path / "g")).stdout.split()[-1]
    assert Path(got, "data.txt").read_text() == "first\n"
    code = ("import artifactfs; print(artifactfs.Api().artifact('p/cats:latest').version)")
    py = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=dict(os.environ, ARTIFACTFS_STORE=store_uri,
                                 ARTIFACTFS_LOCK=str(lockf)), timeout=60)
    assert py.stdout.strip() == "v0", py.stderr
    assert cli(store_uri, "info", "p/cats", "--json", env={"ARTIFACTFS_LOCK": str(lockf)}
               ).stdout.count('"version": 0') == 1

    mnt = mount(store_uri, tmp_path / "mnt", "--lock", str(lockf))
    assert os.readlink(mnt / "p" / "cats" / "latest") == "v0"
    assert (mnt / "p" / "cats" / "latest" / "data.txt").read_text() == "first\n"
    assert (mnt / "p" / "cats" / "v1" / "data.txt").read_text() == "second\n"

    cli(store_uri, "delete", "p/cats:v0", "--delete-aliases")  # the pinned version goes
    p = cli(store_uri, "get", "p/cats", "--lock", str(lockf), "--root", str(tmp_path / "h"),
            ok=False)
    assert p.returncode == 1 and "locked to v0" in p.stderr and "deleted" in p.stderr
    assert not (tmp_path / "h").exists()
    with pytest.raises(OSError) as e:  # EIO once the mount sees the delete, never v1's bytes
        for _ in range(100):
            assert (mnt / "p" / "cats" / "latest" / "data.txt").read_text() == "first\n"
            time.sleep(0.2)
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        os.readlink(mnt / "p" / "cats" / "latest")
    assert e.value.errno == errno.EIO


def test_a_tampered_lock_target_is_an_error(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    put(store, src, "x\n")
    lockf = tmp_path / "a.lock"
    cli(store, "lock", "p/cats", "-o", str(lockf))
    text = lockf.read_text()
    digest = text.split('digest = "')[1].split('"')[0]
    lockf.write_text(text.replace(digest, "0" * 64))
    p = cli(store, "get", "p/cats", "--lock", str(lockf), ok=False)
    assert p.returncode == 1 and "digest is not the locked one" in p.stderr
    lockf.write_text("version = 1\n[[pin]]\nartifact = \"p/cats\"\nalias = \"latest\"\n")
    p = cli(store, "get", "p/cats", "--lock", str(lockf), ok=False)
    assert p.returncode == 1 and "needs exactly the keys" in p.stderr
    p = cli(store, "lock", "p/cats:v0", "-o", str(lockf), ok=False)
    assert p.returncode == 1 and "already names one version" in p.stderr


def test_dated_refs_and_dated_names_in_the_mount(store_uri: str, tmp_path: Path,
                                                 mount: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    put(store_uri, src, "zero\n", "--alias", "best")
    t0 = stamp()
    put(store_uri, src, "one\n")
    t1 = stamp()
    cli(store_uri, "alias", "add", "p/cats:v1", "best")
    t2 = stamp()

    def version(ref: str) -> int:
        return int(json.loads(cli(store_uri, "info", ref, "--json").stdout)["version"])

    assert version(f"p/cats:latest@{t0}") == 0 and version(f"p/cats:@{t1}") == 1
    assert version(f"p/cats:best@{t1}") == 0 and version(f"p/cats:best@{t2}") == 1
    p = cli(store_uri, "info", "p/cats:latest@1999-01-01", ok=False)
    assert p.returncode == 1 and "no version was" in p.stderr
    p = cli(store_uri, "info", "p/cats:latest@someday", ok=False)
    assert p.returncode != 0 and "invalid time" in p.stderr

    mnt = mount(store_uri, tmp_path / "mnt")
    art = mnt / "p" / "cats"
    assert os.readlink(art / f"@{t0}") == "v0"
    assert (art / f"best@{t1}" / "data.txt").read_text() == "zero\n"
    assert (art / f"best@{t2}" / "data.txt").read_text() == "one\n"
    assert not (art / "best@1999-01-01").exists() and not (art / "best@garbage").exists()
    assert not any("@" in n for n in os.listdir(art))  # found by lookup only
