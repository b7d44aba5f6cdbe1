"""What the daemon keeps per entry of a huge directory listed with ``ls -l`` (issue 11 item
14): the kernel holds every entry, so the inode table holds one small leaf per entry (no
cached attributes, no packed entry), and all of it goes when the kernel forgets them."""

from __future__ import annotations

import gc
import hashlib
import os
import tracemalloc
from array import array
from pathlib import Path
from typing import Any

import pyfuse3
from opshelp import CTX, Kernel, put

from artifactfs.mount.cache import RAW_FILE

N = 100_000
BATCH = 4096


class Held:
    """A readdir token that keeps only what the kernel keeps: the inode numbers."""

    def __init__(self) -> None:
        self.inos = array("Q")
        self.n = self.last = 0


def reply(tok: Held, name: bytes, attr: Any, cookie: int) -> bool:
    if tok.n >= BATCH:
        return False
    tok.n += 1
    tok.last = cookie
    tok.inos.append(attr.st_ino)
    return True


async def test_a_huge_listing_keeps_a_small_leaf_per_entry(make_fs, repo, tmp_path: Path,
                                                          monkeypatch):
    src = tmp_path / "src"
    (src / "flat").mkdir(parents=True)
    (src / "flat" / "a").write_text("a")
    put(repo, str(src), "p/big")
    fs = make_fs()
    # the directory's table, as loading a 100 000-entry split directory leaves it
    oid = repo.entry(repo.resolve("p/big:v0"), "flat").oid
    dg = hashlib.sha256(b"x\n").hexdigest()
    fs.manifest.put_raw(oid, [(f"f{i:07d}.txt".encode(), (RAW_FILE, 2, dg, (), False, 1 << 60))
                              for i in range(N)])
    flat = (await Kernel(fs.ops).walk("p/big/v0/flat")).st_ino
    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    tok = Held()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fh = await fs.ops.opendir(flat, CTX)
        while True:
            tok.n = 0
            await fs.ops.readdir(fh, tok.last, tok)  # type: ignore[arg-type]
            if tok.n < BATCH:
                break
        await fs.ops.releasedir(fh)
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - base - len(tok.inos) * 8) / N
        assert len(tok.inos) == N and len(fs.ns.inodes) > N
        assert per_entry < 320, f"{per_entry:.0f} bytes per entry held by the kernel"
        # attributes are still right, built again from the packed entry; files still open
        a = await fs.ops.getattr(tok.inos[12345], CTX)
        assert a.st_size == 2 and a.st_mtime_ns == 1 << 60 and oct(a.st_mode) == "0o100444"
        fi = await fs.ops.open(tok.inos[7], os.O_RDONLY, CTX)
        await fs.ops.release(fi.fh)
        await fs.ops.forget([(ino, 1) for ino in tok.inos])
        tok.inos = array("Q")
        gc.collect()
        left = (tracemalloc.get_traced_memory()[0] - base) / N
        assert left < 16, f"{left:.0f} bytes per entry left after the kernel forgot them"
    finally:
        tracemalloc.stop()
    assert fs.ns.inodes.total_lookups() <= 10
