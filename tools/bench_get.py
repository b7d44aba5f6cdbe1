"""Download cache benchmark: ``get`` again, and ``get`` of a version sharing 90 % of its files.

Rows: the first get of a ~2 GiB version (vs ``cp -r``), a re-get of the same version into the
now complete root (vs the first get: bytes fetched and time), and a get of the next version,
which shares 18 of its 20 files, into a new root (vs the first get: the shared files come from
the first root, verified, not from the store).  Bytes fetched are what ``get`` reports on
stderr.  As root the page cache is dropped before every timed step, so a CLI re-get also pays
a cold Python start; the "warm" row shows it without that, and the "in process" rows time
``Repo.download`` (what ``Artifact.download()`` runs) without any process start.  The CLI runs
with bytecode caching on (some environments set PYTHONDONTWRITEBYTECODE, which makes every
start compile ~70 modules, ~0.07 s here).  put keeps its digest records in another cache
directory, so the first get finds nothing on the node.  BENCH_SMALL=1 shrinks the sizes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import drop_caches, time_row

SMALL = os.environ.get("BENCH_SMALL") == "1"
FILES, SIZE = (20, 8 << 20) if SMALL else (20, 100 << 20)
CHANGED = 2  # of FILES: the second version shares 90 % of them
CLI = [sys.executable, "-m", "artifactfs"]
OLD_NS = 1_600_000_000 * 10**9  # files of a dataset made long ago (settled, statcache.py)


def get(env: dict[str, str], ref: str, root: str, cold: bool = True) -> tuple[float, str]:
    """(seconds, the "fetched …" line) of one ``artifactfs get``."""
    if cold:
        drop_caches()
    t = time.perf_counter()
    p = subprocess.run([*CLI, "get", ref, "--root", root], check=True, env=env,
                       capture_output=True, text=True)
    took = time.perf_counter() - t
    line = next((ln for ln in p.stderr.splitlines() if ln.startswith("fetched")), "?")
    return took, line


def fetched(line: str) -> str:
    m = re.match(r"fetched ([0-9.]+ \w+)", line)
    return m.group(1) if m else "?"


def write_files(src: str, names: range) -> None:
    for i in names:
        path = os.path.join(src, f"shard-{i:02d}.bin")
        with open(path, "wb") as f:
            for _ in range(SIZE // (4 << 20)):
                f.write(os.urandom(4 << 20))
        os.utime(path, ns=(OLD_NS, OLD_NS))


def in_process(store: str, cache: str, ref: str, root: str) -> tuple[float, int]:
    """(seconds, bytes fetched) of ``Repo.download`` with the download cache, in-process."""
    from artifactfs.dlcache import Reuse
    from artifactfs.repo import Repo

    repo = Repo(store)
    rec = repo.resolve(ref)
    drop_caches()
    t = time.perf_counter()
    with Reuse.open(cache) as reuse:
        repo.download(rec, root, reuse=reuse)
    return time.perf_counter() - t, reuse.counts.fetched


def main() -> None:
    work = tempfile.mkdtemp(prefix="artifactfs-bench-get-", dir=os.environ.get("BENCH_DIR"))
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        write_files(src, range(FILES))
        store = os.path.join(work, "store")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(ARTIFACTFS_STORE=store, ARTIFACTFS_CACHE_DIR=os.path.join(work, "put-cache"))
        subprocess.run([*CLI, "put", src, "--name", "bench/dl", "--type", "dataset"],
                       check=True, env=env, capture_output=True)
        env["ARTIFACTFS_CACHE_DIR"] = os.path.join(work, "cache")
        subprocess.run([*CLI, "get", "--help"], check=True, env=env, capture_output=True)
        gib = FILES * SIZE / 2**30
        drop_caches()
        t = time.perf_counter()
        subprocess.run(["cp", "-r", src, os.path.join(work, "copy")], check=True)
        base = time.perf_counter() - t
        shutil.rmtree(os.path.join(work, "copy"))
        root = os.path.join(work, "v0")
        first, line = get(env, "bench/dl:v0", root)
        time_row(f"get {gib:.2f} GiB, first ({fetched(line)} fetched; vs cp -r)", first, base)
        again, line = get(env, "bench/dl:v0", root)
        time_row(f"re-get {gib:.2f} GiB unchanged into a complete root ({fetched(line)} "
                 "fetched; vs first get)", again, first)
        warm, line = get(env, "bench/dl:v0", root, cold=False)
        time_row(f"re-get {gib:.2f} GiB unchanged, warm page cache ({fetched(line)} fetched; "
                 "vs first get)", warm, first)
        cache2 = os.path.join(work, "cache2")
        root2 = os.path.join(work, "v0-api")
        one, n1 = in_process(store, cache2, "bench/dl:v0", root2)
        two, n2 = in_process(store, cache2, "bench/dl:v0", root2)
        time_row(f"re-get {gib:.2f} GiB unchanged, in process ({n2} B fetched; vs first get in "
                 f"process, {n1 / 2**30:.2f} GiB fetched)", two, one)
        shutil.rmtree(root2)
        write_files(src, range(CHANGED))  # new content for 10 % of the files
        env["ARTIFACTFS_CACHE_DIR"] = os.path.join(work, "put-cache")
        subprocess.run([*CLI, "put", src, "--name", "bench/dl", "--type", "dataset"],
                       check=True, env=env, capture_output=True)
        env["ARTIFACTFS_CACHE_DIR"] = os.path.join(work, "cache")
        second, line = get(env, "bench/dl:v1", os.path.join(work, "v1"))
        part = CHANGED * SIZE / 2**20
        time_row(f"get v1 sharing 90 % with v0 into a new root ({fetched(line)} fetched, "
                 f"{part:.0f} MiB changed; vs first get)", second, first)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
