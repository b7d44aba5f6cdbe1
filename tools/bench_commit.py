"""Drafts benchmark: commit cost and draft write throughput, against baselines of the same run.

Prints markdown rows ``| metric | value | baseline | ratio |``:

* a commit that changes one file of a 50 000-file artifact, end to end: ``artifactfs commit``
  (process start included) through the mount, after the file was rewritten in a draft made
  with ``mkdir``; against the full ``put`` of the same artifact, and against the 1 s budget.
  Two layouts: 50 directories of 1 000 files, and one flat directory of 50 000 files (whose
  one node must be re-encoded whole).  Medians of BENCH_TRIALS (3) commits;
* ``cp`` of a 1 GiB file into a draft against ``cp`` of it to the local disk (same disk as the
  drafts area; coreutils ``cp`` copies in the kernel with ``copy_file_range`` there), and
  against a minimal pyfuse3 server that only ``pwrite`` into one local file (write-only
  handles with ``direct_io``, like ours): the floor of the transport.  The source is in the
  page cache, ``sync`` before each copy; medians of BENCH_TRIALS interleaved copies, as
  throughput (higher is better).

BENCH_SMALL=1 shrinks every size for a smoke run; BENCH_DIR picks the scratch disk.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import time_row

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MINIMAL_WRITER = r'''
import errno, os, stat, sys, pyfuse3, trio

class Ops(pyfuse3.Operations):
    def __init__(self, path):
        super().__init__()
        self.path, self.size, self.fd = path, 0, None

    def _attr(self, ino):
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = (stat.S_IFDIR | 0o755) if ino == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o644)
        a.st_size = self.size if ino == 2 else 0
        a.st_blksize = 1 << 20
        a.entry_timeout = a.attr_timeout = 1
        return a

    async def getattr(self, ino, ctx=None):
        return self._attr(ino)

    async def lookup(self, parent, name, ctx=None):
        if parent == pyfuse3.ROOT_INODE and name == b"data" and self.fd is not None:
            return self._attr(2)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def create(self, parent, name, mode, flags, ctx):
        self.fd, self.size = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 0
        return pyfuse3.FileInfo(fh=2, direct_io=True), self._attr(2)

    async def write(self, fh, off, buf):
        n = os.pwrite(self.fd, buf, off)
        self.size = max(self.size, off + n)
        return n

    async def release(self, fh):
        pass

    async def unlink(self, parent, name, ctx):
        os.close(self.fd)
        self.fd = None
        os.unlink(self.path)

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, off, token):
        pass

pyfuse3.init(Ops(sys.argv[1]), sys.argv[2], {"fsname=minimal-writer"})
try:
    trio.run(pyfuse3.main)
finally:
    pyfuse3.close(unmount=True)
'''

SMALL = os.environ.get("BENCH_SMALL") == "1"
FILES = 5000 if SMALL else 50_000
BIG = (64 << 20) if SMALL else (1 << 30)
TRIALS = int(os.environ.get("BENCH_TRIALS", "1" if SMALL else "3"))
CLI = [sys.executable, "-m", "artifactfs"]


def mounted(mp: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mp for line in f)


def rate_row(metric: str, value: float, baseline: float) -> None:
    print(f"| {metric} | {value:.0f} MB/s | {baseline:.0f} MB/s | {value / baseline:.2f}x |",
          flush=True)


class Bench:
    def __init__(self, work: str) -> None:
        self.work = work
        self.env = dict(os.environ, ARTIFACTFS_STORE=os.path.join(work, "store"),
                        XDG_CONFIG_HOME=os.path.join(work, "config"))
        self.mp = os.path.join(work, "mnt")
        os.makedirs(self.mp)

    def cli(self, *args: str) -> str:
        return subprocess.run([*CLI, *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def timed(self, *args: str) -> float:
        t = time.perf_counter()
        self.cli(*args)
        return time.perf_counter() - t

    def mount(self) -> None:
        self.cli("mount", self.mp, "--cache-dir", os.path.join(self.work, "cache"))

    def cleanup(self) -> None:
        for cmd in ([*CLI, "unmount", self.mp], ["fusermount3", "-u", "-z", self.mp]):
            if mounted(self.mp):
                subprocess.run(cmd, env=self.env, capture_output=True, check=False)

    # --- (a) commit cost ---------------------------------------------------------------------
    def tree(self, name: str, dirs: int) -> str:
        root = os.path.join(self.work, name)
        per = FILES // dirs
        for d in range(dirs):
            sub = os.path.join(root, f"d{d:03d}") if dirs > 1 else root
            os.makedirs(sub, exist_ok=True)
            for i in range(per):
                with open(os.path.join(sub, f"f{i:05d}.txt"), "w") as f:
                    f.write(f"{name} {d} {i}\n")
        return root

    def commit_one(self, artifact: str, dirs: int) -> None:
        src = self.tree(f"src-{artifact}", dirs)
        put = self.timed("put", src, "--name", f"bench/{artifact}", "--type", "dataset")
        changed = "d000/f00000.txt" if dirs > 1 else "f00000.txt"
        times = []
        for trial in range(TRIALS):
            draft = os.path.join(self.mp, "drafts", "bench", artifact, f"t{trial}")
            os.makedirs(draft)
            with open(os.path.join(draft, changed), "w") as f:
                f.write(f"changed in trial {trial}\n")
            times.append(self.timed("commit", draft))
        got = statistics.median(times)
        layout = f"{dirs} dirs x {FILES // dirs}" if dirs > 1 else "one flat dir"
        time_row(f"commit of 1 changed file in a {FILES}-file artifact ({layout}), CLI end to "
                 "end (vs full put)", got, put)
        time_row(f"commit of 1 changed file in a {FILES}-file artifact ({layout}), CLI end to "
                 "end (vs the 1 s budget)", got, 1.0)

    # --- (b) write throughput ----------------------------------------------------------------
    def write_rate(self) -> None:
        src = os.path.join(self.work, "big.src")
        with open(src, "wb") as f:
            for _ in range(BIG >> 20):
                f.write(os.urandom(1 << 20))
        with open(src, "rb") as f:  # in the page cache, for both copies alike
            while f.read(1 << 24):
                pass
        draft = os.path.join(self.mp, "drafts", "bench", "big", "w")
        os.makedirs(draft)
        local_dir = os.path.join(self.work, "local")
        os.makedirs(local_dir)
        minimal_mp = os.path.join(self.work, "m-writer")
        os.makedirs(minimal_mp)
        server = os.path.join(self.work, "minimal_writer.py")
        with open(server, "w") as f:
            f.write(MINIMAL_WRITER)
        proc = subprocess.Popen([sys.executable, server, os.path.join(local_dir, "minimal"),
                                 minimal_mp])
        try:
            for _ in range(100):
                if mounted(minimal_mp):
                    break
                time.sleep(0.1)
            ours, local, minimal = [], [], []
            for trial in range(TRIALS):
                for dest, out in ((os.path.join(local_dir, f"c{trial}"), local),
                                  (os.path.join(minimal_mp, "data"), minimal),
                                  (os.path.join(draft, f"c{trial}"), ours)):
                    subprocess.run(["sync"], check=True)
                    t = time.perf_counter()
                    subprocess.run(["cp", src, dest], check=True)
                    out.append(BIG / (time.perf_counter() - t) / 1e6)
                    os.unlink(dest)
        finally:
            subprocess.run(["fusermount3", "-u", "-z", minimal_mp], capture_output=True,
                           check=False)
            proc.wait(10)
        mib = BIG >> 20
        rate_row(f"cp of a {mib} MiB file into a draft (vs cp to local disk; higher is better)",
                 statistics.median(ours), statistics.median(local))
        rate_row(f"cp of a {mib} MiB file into a draft (vs minimal pyfuse3 pwrite server, "
                 "direct_io)", statistics.median(ours), statistics.median(minimal))


def main() -> None:
    work = tempfile.mkdtemp(prefix="artifactfs-bench-commit-", dir=os.environ.get("BENCH_DIR"))
    b = Bench(work)
    try:
        b.mount()
        b.commit_one("nested", 50)
        b.commit_one("flat", 1)
        b.write_rate()
    finally:
        b.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
