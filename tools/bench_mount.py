"""Mount benchmark: the read-only mount against baselines measured in the same run.

Prints markdown rows ``| metric | value | baseline | ratio |``:

* sequential first read of a 1 GiB file through the mount vs a minimal pyfuse3 server that
  just ``pread``s the same bytes (written below, ~40 lines, default kernel settings and the
  same settings our daemon applies), and vs ``rclone mount`` of the same file (row skipped
  without rclone); re-read from the page cache.  Medians of BENCH_TRIALS (3) interleaved
  runs, each on a fresh mount;
* a cold ``find`` + ``ls -lR`` of a 100 000-file version vs the same walk of the source tree
  on local disk, and the daemon's peak RSS during it;
* mount start (the ``artifactfs mount`` command, until the mount is live) with 1 000 versions
  in the store, and the first listing of those versions.

BENCH_SMALL=1 shrinks every size for a smoke run; BENCH_DIR picks the scratch disk.  As root
the page cache is dropped before every first read, so first reads are first reads.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import drop_caches

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SMALL = os.environ.get("BENCH_SMALL") == "1"
FILE_SIZE = (64 << 20) if SMALL else (1 << 30)
WALK_FILES = 5000 if SMALL else 100_000
VERSIONS = 100 if SMALL else 1000
TRIALS = int(os.environ.get("BENCH_TRIALS", "1" if SMALL else "3"))
CLI = [sys.executable, "-m", "artifactfs"]
BUF = 1 << 20
WALK = "find {0} >/dev/null && ls -lR {0} >/dev/null"

MINIMAL_SERVER = r'''
import errno, os, stat, sys, pyfuse3, trio

class Ops(pyfuse3.Operations):
    def __init__(self, path):
        super().__init__()
        self.path, self.st, self.fd = path, os.stat(path), os.open(path, os.O_RDONLY)

    def _attr(self, ino):
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = (stat.S_IFDIR | 0o555) if ino == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o444)
        a.st_size = 0 if ino == pyfuse3.ROOT_INODE else self.st.st_size
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = self.st.st_mtime_ns
        a.entry_timeout = a.attr_timeout = 300
        return a

    async def getattr(self, ino, ctx=None):
        return self._attr(ino)

    async def lookup(self, parent, name, ctx=None):
        if parent == pyfuse3.ROOT_INODE and name == b"data":
            return self._attr(2)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, off, token):
        if off == 0:
            pyfuse3.readdir_reply(token, b"data", self._attr(2), 1)

    async def open(self, ino, flags, ctx):
        return pyfuse3.FileInfo(fh=ino, keep_cache=True)

    async def read(self, fh, off, size):
        return os.pread(self.fd, size, off)

pyfuse3.init(Ops(sys.argv[1]), sys.argv[2], {"fsname=minimal", "ro"})
try:
    trio.run(pyfuse3.main)
finally:
    pyfuse3.close(unmount=True)
'''


def row(metric: str, value: float, baseline: float, unit: str, higher_better: bool) -> None:
    ratio = value / baseline if baseline else float("nan")
    note = "" if higher_better else " (lower is better)"
    print(f"| {metric}{note} | {value:.2f} {unit} | {baseline:.2f} {unit} | {ratio:.2f}x |",
          flush=True)


def mounted(mp: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mp for line in f)


def wait_mounted(mp: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not mounted(mp):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mp} did not mount")
        time.sleep(0.01)
    while True:  # mounted and answering
        try:
            os.listdir(mp)
            return
        except OSError:
            time.sleep(0.01)


def unmount(mp: str) -> None:
    for cmd in (["fusermount3", "-u", mp], ["fusermount3", "-u", "-z", mp]):
        if not mounted(mp):
            return
        subprocess.run(cmd, capture_output=True, check=False)
        time.sleep(0.1)


def read_mbps(path: str) -> float:
    """Sequential read of a whole file with 1 MiB reads: MB/s."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    t = time.perf_counter()
    n = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            k = os.readv(fd, [view])
            if not k:
                break
            n += k
    finally:
        os.close(fd)
    return n / (time.perf_counter() - t) / 1e6


def set_read_ahead(mp: str, kb: int) -> None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mp:
                try:
                    with open(f"/sys/class/bdi/{fields[2]}/read_ahead_kb", "w") as bdi:
                        bdi.write(str(kb))
                except OSError:
                    pass


class Bench:
    def __init__(self, work: str) -> None:
        self.work = work
        self.store = os.path.join(work, "store")
        self.env = dict(os.environ, ARTIFACTFS_STORE=self.store,
                        XDG_CONFIG_HOME=os.path.join(work, "config"))
        self.mounts: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def mp(self, name: str) -> str:
        path = os.path.join(self.work, name)
        os.makedirs(path, exist_ok=True)
        self.mounts.append(path)
        return path

    def cli(self, *args: str) -> str:
        return subprocess.run([*CLI, *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def our_mount(self, name: str, cache: str) -> tuple[str, float]:
        mp = self.mp(name)
        t = time.perf_counter()
        self.cli("mount", mp, "--cache-dir", os.path.join(self.work, cache))
        return mp, time.perf_counter() - t

    def daemon_pid(self, mp: str) -> int:
        from artifactfs.mount import registry

        rec = registry.read(mp)
        assert rec is not None
        return rec.pid

    def cleanup(self) -> None:
        for mp in self.mounts:
            unmount(mp)
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    # --- sequential read ---------------------------------------------------------------------
    def _ours_read(self, trial: int) -> tuple[float, float]:
        mp, _ = self.our_mount(f"m-big{trial}", f"cache-big{trial}")
        path = os.path.join(mp, "bench", "big", "v0", "big.bin")
        os.listdir(os.path.dirname(path))
        drop_caches()
        first = read_mbps(path)
        again = read_mbps(path)
        unmount(mp)
        return first, again

    def _minimal_read(self, path: str, tune: bool) -> tuple[float, float]:
        server = os.path.join(self.work, "minimal_server.py")
        with open(server, "w") as f:
            f.write(MINIMAL_SERVER)
        mp = self.mp("m-minimal")
        proc = subprocess.Popen([sys.executable, server, path, mp])
        self.procs.append(proc)
        wait_mounted(mp)
        if tune:  # the knob our daemon turns, for a second, fairer row
            set_read_ahead(mp, 1024)
        drop_caches()
        first = read_mbps(os.path.join(mp, "data"))
        again = read_mbps(os.path.join(mp, "data"))
        unmount(mp)
        proc.wait(10)
        return first, again

    def _rclone_read(self, src: str) -> float:
        mp = self.mp("m-rclone")
        rc = subprocess.Popen(["rclone", "mount", src, mp, "--read-only"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(rc)
        wait_mounted(mp)
        drop_caches()
        mbps = read_mbps(os.path.join(mp, "big.bin"))
        unmount(mp)
        rc.wait(10)
        return mbps

    def sequential(self) -> None:
        src = os.path.join(self.work, "bigsrc")
        os.makedirs(src)
        path = os.path.join(src, "big.bin")
        with open(path, "wb") as f:
            for _ in range(FILE_SIZE // (8 << 20)):
                f.write(os.urandom(8 << 20))
        self.cli("put", src, "--name", "bench/big", "--type", "model")
        label = f"{FILE_SIZE / 2**30:.2f} GiB" if FILE_SIZE >= 1 << 30 else f"{FILE_SIZE >> 20} MiB"
        rclone = shutil.which("rclone") is not None
        runs: dict[str, list[float]] = {k: [] for k in ("ours", "ours2", "min", "min2", "tuned",
                                                        "rclone")}
        for trial in range(TRIALS):  # interleaved, medians: this machine is shared and noisy
            first, again = self._ours_read(trial)
            runs["ours"].append(first)
            runs["ours2"].append(again)
            first, again = self._minimal_read(path, tune=False)
            runs["min"].append(first)
            runs["min2"].append(again)
            runs["tuned"].append(self._minimal_read(path, tune=True)[0])
            if rclone:
                runs["rclone"].append(self._rclone_read(src))
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        row(f"sequential first read {label} (vs minimal pyfuse3 pread server)", med["ours"],
            med["min"], "MB/s", True)
        row(f"sequential first read {label} (vs minimal server with read_ahead_kb=1024)",
            med["ours"], med["tuned"], "MB/s", True)
        if rclone:
            row(f"sequential first read {label} (vs rclone mount)", med["ours"], med["rclone"],
                "MB/s", True)
        row(f"re-read {label} from the page cache (vs minimal server re-read)", med["ours2"],
            med["min2"], "MB/s", True)

    # --- walking a big version -----------------------------------------------------------------
    def _walk_ours(self, trial: int, cache: str) -> tuple[float, float]:
        mp, _ = self.our_mount(f"m-walk{trial}", cache)
        pid = self.daemon_pid(mp)
        drop_caches()
        t = time.perf_counter()
        subprocess.run(WALK.format(os.path.join(mp, "bench", "walk", "v0")), shell=True,
                       check=True)
        took = time.perf_counter() - t
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        unmount(mp)
        return took, hwm

    def walk(self) -> None:
        src = os.path.join(self.work, "walksrc")
        for i in range(WALK_FILES):
            d = os.path.join(src, f"d{i // 1000:03d}")
            if i % 1000 == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"file-{i:06d}.txt"), "w") as f:
                f.write(f"{i}\n")
        self.cli("put", src, "--name", "bench/walk", "--type", "dataset")
        local, cold, warm, rss = [], [], [], []
        for trial in range(TRIALS):
            drop_caches()
            t = time.perf_counter()
            subprocess.run(WALK.format(src), shell=True, check=True)
            local.append(time.perf_counter() - t)
            took, hwm = self._walk_ours(trial, f"cache-walk{trial}")  # empty manifest cache
            cold.append(took)
            rss.append(hwm)
            warm.append(self._walk_ours(trial, f"cache-walk{trial}")[0])  # a remount
        n = f"{WALK_FILES // 1000}k" if WALK_FILES >= 1000 else str(WALK_FILES)
        loc = statistics.median(local)
        row(f"cold find + ls -lR of a {n}-file version, fresh mount and cache (vs local disk)",
            statistics.median(cold), loc, "s", False)
        row(f"cold find + ls -lR of a {n}-file version, remount over a warm manifest cache "
            "(vs local disk)", statistics.median(warm), loc, "s", False)
        row("daemon peak RSS during the fresh walk (vs the 250 MB budget)", max(rss), 250, "MB",
            False)

    # --- many versions ---------------------------------------------------------------------------
    def versions(self) -> None:
        from artifactfs.repo import Repo
        from artifactfs.store.local import LocalStore

        repo = Repo(LocalStore(self.store))
        src = os.path.join(self.work, "vsrc")
        os.makedirs(src)
        for i in range(VERSIONS):
            with open(os.path.join(src, "v.txt"), "w") as f:
                f.write(f"version {i}\n")
            repo.put_path(src, "bench", "many", "dataset")
        mp, start = self.our_mount("m-versions", "cache-versions")
        t = time.perf_counter()
        names = os.listdir(os.path.join(mp, "bench", "many"))
        first_ls = time.perf_counter() - t
        assert len(names) == VERSIONS + 1, len(names)
        unmount(mp)
        row(f"mount start with {VERSIONS} versions in the store (vs the 1 s budget)", start, 1.0,
            "s", False)
        row(f"first ls of an artifact with {VERSIONS} versions (vs the 1 s budget)", first_ls,
            1.0, "s", False)


def main() -> None:
    parts = ("sequential", "walk", "versions")
    only = [p for p in os.environ.get("BENCH_ONLY", ",".join(parts)).split(",") if p in parts]
    if not only:  # BENCH_ONLY names parts of other scripts only
        return
    work = tempfile.mkdtemp(prefix="artifactfs-bench-mount-", dir=os.environ.get("BENCH_DIR"))
    b = Bench(work)
    try:
        for part in only:
            getattr(b, part)()
    finally:
        b.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
