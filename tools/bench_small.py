"""Small-file read benchmark: a DataLoader reading many small files, against baselines
measured in the same run.

Parts (``BENCH_ONLY=small,s3small`` picks; the default runs both):

* ``small`` — a tree of small files (20 000 files of 4-64 KiB in 100 directories; BENCH_SMALL=1:
  2 000 in 20) read whole, each file once, in random order, by 1 and by 8 processes, as files
  per second: the local disk, a **minimal pyfuse3 passthrough** of the same tree (written
  below: lookup = ``lstat``, open = ``os.open``, read = ``os.pread``, release = ``close``, the
  same kernel caching as our daemon gives version content: day-long entry and attribute
  timeouts, ``keep_cache``, the same mount options and ``read_ahead_kb``; no ``flush``
  handler, so the kernel stops sending it) and artifactfs over a directory store holding the
  tree.  Mount options matter: a read-only (``ro``) passthrough would be spared one GETATTR
  per file and pass, because the kernel invalidates a file's atime after each READ unless the
  whole mount is read-only (our mount is not: drafts are writable), and the next ``fstat``
  asks again.  "first read" is the first pass after
  a fresh mount (and, for artifactfs, a fresh cache directory) with the page cache dropped;
  "again" is a second pass on the same mount (kernel caches warm).
* ``s3small`` — the same tree in an S3 store on a moto server (its own process): the first
  read through a fresh mount and cache, by 1 and by 8 processes, against boto3 downloading
  the same objects to files with 16 threads.

Rows: ``| metric | artifactfs | baseline | ratio |`` (files/s, higher is better); the local
disk's rate is in the metric's name.  Medians of BENCH_TRIALS (3; 1 with BENCH_SMALL=1)
interleaved runs.  As root the page cache is dropped before every first read.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from bench_mount import mounted, set_read_ahead, unmount, wait_mounted
from benchlib import drop_caches

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SMALL = os.environ.get("BENCH_SMALL") == "1"
FILES, DIRS = (2000, 20) if SMALL else (20_000, 100)
TRIALS = int(os.environ.get("BENCH_TRIALS", "1" if SMALL else "3"))
PROCS = (1, 8)
CLI = [sys.executable, "-m", "artifactfs"]

PASSTHROUGH = r'''
import errno, os, stat, sys, pyfuse3, trio

DAY = 86400.0

class Ops(pyfuse3.Operations):
    def __init__(self, root):
        super().__init__()
        self.paths = {pyfuse3.ROOT_INODE: root}
        self.root_ino = os.lstat(root).st_ino

    def _attr(self, st):
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.ROOT_INODE if st.st_ino == self.root_ino else st.st_ino
        a.st_mode, a.st_size, a.st_nlink = st.st_mode, st.st_size, st.st_nlink
        a.st_uid, a.st_gid, a.st_blksize, a.st_blocks = st.st_uid, st.st_gid, 131072, st.st_blocks
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = st.st_mtime_ns
        a.entry_timeout = a.attr_timeout = DAY
        return a

    async def getattr(self, ino, ctx=None):
        return self._attr(os.lstat(self.paths[ino]))

    async def lookup(self, parent, name, ctx=None):
        path = os.path.join(self.paths[parent], os.fsdecode(name))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a = self._attr(st)
        self.paths[a.st_ino] = path
        return a

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, off, token):
        names = sorted(os.listdir(self.paths[fh]))
        for i in range(off, len(names)):
            a = await self.lookup(fh, os.fsencode(names[i]))
            if not pyfuse3.readdir_reply(token, os.fsencode(names[i]), a, i + 1):
                return

    async def open(self, ino, flags, ctx):
        return pyfuse3.FileInfo(fh=os.open(self.paths[ino], os.O_RDONLY), keep_cache=True)

    async def read(self, fh, off, size):
        return os.pread(fh, size, off)

    async def release(self, fh):
        os.close(fh)

pyfuse3.init(Ops(sys.argv[1]), sys.argv[2], {"fsname=passthrough", "noatime"})
try:
    trio.run(pyfuse3.main)
finally:
    pyfuse3.close(unmount=True)
'''


def make_tree(root: str) -> list[str]:
    """FILES files of 4-64 KiB in DIRS directories; their paths relative to ``root``."""
    rng = random.Random(13)
    rel = []
    for i in range(FILES):
        d = f"d{i % DIRS:03d}"
        if i < DIRS:
            os.makedirs(os.path.join(root, d))
        name = f"{d}/img-{i:06d}.jpg"
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(rng.randint(4 << 10, 64 << 10)))
        rel.append(name)
    return rel


def _read_all(paths: list[str]) -> int:
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            n += len(f.read())
    return n


class Reader:
    """Pools of 1 and 8 reader processes, forked once, so a pass times only the reads."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pools = {n: ctx.Pool(n) for n in PROCS}

    def rate(self, root: str, rel: list[str], procs: int, seed: int) -> float:
        """Files per second of one pass over every file, in a random order."""
        order = [os.path.join(root, r) for r in rel]
        random.Random(seed).shuffle(order)
        shards = [order[i::procs] for i in range(procs)]
        t = time.perf_counter()
        self.pools[procs].map(_read_all, shards, chunksize=1)
        return len(order) / (time.perf_counter() - t)

    def close(self) -> None:
        for p in self.pools.values():
            p.terminate()
            p.join()


def row(metric: str, value: float, baseline: float) -> None:
    print(f"| {metric} | {value:,.0f} files/s | {baseline:,.0f} files/s | "
          f"{value / baseline:.2f}x |", flush=True)


class SmallBench:
    def __init__(self, work: str, reader: Reader) -> None:
        self.work = work
        self.reader = reader
        self.src = os.path.join(work, "src")
        self.rel = make_tree(self.src)
        self.env = dict(os.environ, ARTIFACTFS_STORE=os.path.join(work, "store"),
                        XDG_CONFIG_HOME=os.path.join(work, "config"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mounts: list[str] = []
        self.n = 0

    def cli(self, *args: str) -> None:
        subprocess.run([*CLI, *args], env=self.env, check=True, capture_output=True)

    def _fresh(self, name: str) -> str:
        self.n += 1
        mp = os.path.join(self.work, f"{name}{self.n}")
        os.makedirs(mp)
        self.mounts.append(mp)
        return mp

    def passes(self, root: str, procs: int, seed: int) -> tuple[float, float]:
        drop_caches()
        first = self.reader.rate(root, self.rel, procs, seed)
        return first, self.reader.rate(root, self.rel, procs, seed + 1)

    @contextlib.contextmanager
    def passthrough(self) -> Iterator[str]:
        server = os.path.join(self.work, "passthrough.py")
        with open(server, "w") as f:
            f.write(PASSTHROUGH)
        mp = self._fresh("m-pass")
        # its own session, as our daemon runs (the scheduler groups processes by session)
        proc = subprocess.Popen([sys.executable, server, self.src, mp], start_new_session=True)
        self.procs.append(proc)
        wait_mounted(mp)
        set_read_ahead(mp, 1024)  # as our daemon sets it
        try:
            yield mp
        finally:
            unmount(mp)
            proc.wait(10)

    @contextlib.contextmanager
    def ours(self, *store: str) -> Iterator[str]:
        mp = self._fresh("m-ours")
        self.cli(*store, "mount", mp, "--cache-dir", os.path.join(self.work, f"cache{self.n}"))
        try:
            yield os.path.join(mp, "bench", "small", "v0")
        finally:
            unmount(mp)

    def run(self) -> None:
        self.cli("put", self.src, "--name", "bench/small", "--type", "dataset")
        res: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for trial in range(TRIALS):  # interleaved, medians: the machine is shared and noisy
            for procs in PROCS:
                seed = trial * 10 + procs
                res.setdefault(("local", procs), []).append(self.passes(self.src, procs, seed))
                with self.passthrough() as mp:
                    res.setdefault(("pass", procs), []).append(self.passes(mp, procs, seed))
                with self.ours() as mp:
                    res.setdefault(("ours", procs), []).append(self.passes(mp, procs, seed))
        for procs in PROCS:
            for i, what in enumerate(("first read after mount", "again (kernel caches warm)")):
                med = {k: statistics.median(r[i] for r in res[(k, procs)])
                       for k in ("local", "pass", "ours")}
                row(f"small files ({FILES // 1000}k, 4-64 KiB): {what}, {procs} process"
                    f"{'es' if procs > 1 else ''} (vs minimal pyfuse3 passthrough; local disk "
                    f"{med['local']:,.0f} files/s)", med["ours"], med["pass"])

    def cleanup(self) -> None:
        for mp in self.mounts:
            if mounted(mp):
                unmount(mp)
        for p in self.procs:
            if p.poll() is None:
                p.kill()


# --- S3 ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 in its own process (not competing with the bench for this one's GIL)."""
    port = _free_port()
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def boto3_rate(keys: list[str], dest: str, threads: int = 16) -> float:
    """Files per second of boto3 downloading ``keys`` of the bench bucket to files."""
    import boto3

    s3 = boto3.client("s3")
    os.makedirs(dest, exist_ok=True)

    def one(i_key: tuple[int, str]) -> None:
        body = s3.get_object(Bucket="bench", Key=i_key[1])["Body"].read()
        with open(os.path.join(dest, str(i_key[0])), "wb") as f:
            f.write(body)

    drop_caches()
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, enumerate(keys)))
    return len(keys) / (time.perf_counter() - t)


def s3small(bench: SmallBench) -> None:
    logging.getLogger("botocore").setLevel(logging.ERROR)
    with moto_server() as url:
        os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        bench.env.update(os.environ)
        import boto3

        from artifactfs.model import object_key

        boto3.client("s3").create_bucket(Bucket="bench")
        store = ("--store", "s3://bench/store")
        t = time.perf_counter()
        bench.cli(*store, "put", bench.src, "--name", "bench/small", "--type", "dataset")
        print(f"(put of the tree to moto: {time.perf_counter() - t:.1f} s)", file=sys.stderr)
        keys = sorted({"store/" + object_key(_sha256(os.path.join(bench.src, r)))
                       for r in bench.rel})
        base: list[float] = []
        ours: dict[int, list[float]] = {n: [] for n in PROCS}
        for trial in range(TRIALS):
            base.append(boto3_rate(keys, os.path.join(bench.work, f"dl{trial}")))
            shutil.rmtree(os.path.join(bench.work, f"dl{trial}"))
            for procs in PROCS:
                with bench.ours(*store) as mp:
                    drop_caches()
                    ours[procs].append(bench.reader.rate(mp, bench.rel, procs, trial))
            print(f"(s3small trial {trial + 1}: boto3 {base[-1]:.0f} files/s, ours " +
                  ", ".join(f"{ours[n][-1]:.0f} with {n}" for n in PROCS) + ")", file=sys.stderr)
        b = statistics.median(base)
        for procs in PROCS:
            row(f"S3 small files ({FILES // 1000}k, 4-64 KiB): first read after mount, {procs} "
                f"process{'es' if procs > 1 else ''} (vs boto3 get_object to files, 16 threads)",
                statistics.median(ours[procs]), b)


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


PARTS: dict[str, Callable[[SmallBench], None]] = {"small": SmallBench.run, "s3small": s3small}


def main() -> None:
    only = [p for p in os.environ.get("BENCH_ONLY", ",".join(PARTS)).split(",") if p in PARTS]
    if not only:
        return
    work = tempfile.mkdtemp(prefix="artifactfs-bench-small-", dir=os.environ.get("BENCH_DIR"))
    reader = Reader()
    bench = SmallBench(work, reader)
    try:
        for part in only:
            PARTS[part](bench)
    finally:
        bench.cleanup()
        reader.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
