"""The mount with damaged records (issue 11, items 4 and 6), handlers called directly: the
damaged version or alias answers EIO and is logged; everything else keeps working."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pyfuse3
import pytest
from opshelp import CTX, Kernel

from artifactfs.repo import Repo


def three_versions(tmp_path: Path, repo: Repo) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / "f.txt").write_text(f"v{i}")
        repo.put_path(str(src), "p", "a", "dataset", aliases=[f"a{i}"])


def vkey(n: int) -> str:
    return f"artifacts/p/a/versions/{n:010d}.json"


async def eio(k: Kernel, path: str) -> None:
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await k.walk(path)
    assert ei.value.errno == errno.EIO, path


async def test_a_damaged_version_or_alias_is_eio_and_the_rest_works(
        make_fs, repo, tmp_path, caplog):
    three_versions(tmp_path, repo)
    repo.store.put(vkey(1), b"{garbage")
    repo.store.put("artifacts/p/a/aliases/a0.json", b'{"version": []}')
    caplog.set_level(logging.ERROR)
    fs = make_fs()
    k = Kernel(fs.ops)
    art = await k.walk("p/a")
    names = sorted(n for n, _, _ in await k.readdir(art.st_ino))
    assert names == [b"a2", b"latest", b"v0", b"v2"]
    assert await k.read_file((await k.walk("p/a/v0/f.txt")).st_ino) == b"v0"
    assert await fs.ops.readlink((await k.walk("p/a/latest")).st_ino, CTX) == b"v2"
    assert await fs.ops.readlink((await k.walk("p/a/a2")).st_ino, CTX) == b"v2"
    await eio(k, "p/a/v1")
    await eio(k, "p/a/a0")
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await k.walk("p/a/a1")  # points at the damaged v1: absent, like a deleted target
    assert ei.value.errno == errno.ENOENT
    logged = caplog.text
    assert "p/a:v1 can not be read" in logged and "0000000001.json" in logged
    assert "alias a0 of p/a can not be read" in logged
    # the damaged record on top: latest is EIO, the others still work
    repo.store.put(vkey(2), b"[]")
    fs.clock.advance(60)
    await eio(k, "p/a/latest")
    assert await k.read_file((await k.walk("p/a/v0/f.txt")).st_ino) == b"v0"


async def test_a_record_pointing_at_another_tree_is_eio(make_fs, repo, tmp_path, caplog):
    three_versions(tmp_path, repo)
    doc = json.loads(repo.store.get(vkey(1)))
    doc["root"] = json.loads(repo.store.get(vkey(0)))["root"]
    repo.store.put(vkey(1), json.dumps(doc).encode())
    fs = make_fs()
    k = Kernel(fs.ops)
    await eio(k, "p/a/v1/f.txt")
    v1 = await k.walk("p/a/v1")
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await fs.ops.opendir(v1.st_ino, CTX)
    assert ei.value.errno == errno.EIO
    assert "p/a:v1 does not match its root tree" in caplog.text
    assert await k.read_file((await k.walk("p/a/v2/f.txt")).st_ino) == b"v2"
