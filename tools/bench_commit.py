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

* small synchronous writes: 4 KiB ``pwrite`` calls on a read-write handle (page cache, no
  ``direct_io``: what sqlite does), microseconds per write, against the minimal server and the
  local disk;
* sqlite (what issue 18 measured: each 4 KiB page one synchronous WRITE, fsyncs at every
  commit): a bulk load of SQLITE_ROWS rows in one transaction, and one-row transactions (ms
  each), in a draft against the local disk and the minimal pyfuse3 passthrough;
* ``tar -x`` of a 32 700-entry tarball into a draft, and ``rsync -a`` of the same tree into a
  draft, first and repeated (the rows name how many lines ``rsync -i`` itemized), against the
  same commands on the local disk and into a minimal pyfuse3 passthrough (tools/passthrough.py:
  one system call a request, the floor of this stack); then the repeat, with the README's
  flags, into a new draft of the version committed from the rsync'ed draft;
* S3 (a moto server in its own process): ``put`` and ``commit`` of 20 000 small files against
  boto3 ``upload_file`` of the same files with 16 threads (files/s, higher is better), and the
  re-commit of the same content (HEADs, no bodies) against the first commit.

BENCH_SMALL=1 shrinks every size for a smoke run; BENCH_DIR picks the scratch disk;
BENCH_ONLY picks rows (comma-separated: commit, cp, smallwrite, sqlite, tar, rsync, s3; ``write``, the
default, means all of them): ``BENCH_ONLY=tar,rsync tools/bench commit``.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import sqlite3
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
        self.fd, self.size = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), 0
        write_only = flags & os.O_ACCMODE == os.O_WRONLY  # direct_io as ours: write-only only
        return pyfuse3.FileInfo(fh=2, direct_io=write_only), self._attr(2)

    async def write(self, fh, off, buf):
        n = os.pwrite(self.fd, buf, off)
        self.size = max(self.size, off + n)
        return n

    async def getxattr(self, ino, name, ctx):
        if not XATTRS:  # ENOSYS: the kernel stops asking (no extended attributes at all)
            raise pyfuse3.FUSEError(errno.ENOSYS)
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)  # as a file system with user.* xattrs

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

XATTRS = len(sys.argv) > 3
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
SMALL_WRITES = 2000 if SMALL else 20_000
TREE_DIRS, TREE_FILES, TREE_KIB = (10, 99, 8) if SMALL else (327, 99, 30)
S3_FILES = 300 if SMALL else 20_000
SQLITE_ROWS, SQLITE_TXNS = (20_000, 50) if SMALL else (200_000, 200)
CLI = [sys.executable, "-m", "artifactfs"]
PARTS = ("commit", "cp", "smallwrite", "sqlite", "tar", "rsync", "s3")
README_RSYNC = ["--no-perms", "--executability", "--omit-dir-times"]  # a version keeps x bits
BOTO3_UPLOAD = r'''
import os, sys, boto3
from botocore.config import Config
from concurrent.futures import ThreadPoolExecutor
s3 = boto3.client("s3", config=Config(max_pool_connections=32))
root, bucket = sys.argv[1], sys.argv[2]
paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda p: s3.upload_file(p, bucket, os.path.relpath(p, root)), paths))
'''


def mounted(mp: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mp for line in f)


def rate_row(metric: str, value: float, baseline: float, unit: str = "MB/s") -> None:
    print(f"| {metric} | {value:.0f} {unit} | {baseline:.0f} {unit} | {value / baseline:.2f}x |",
          flush=True)


def us_row(metric: str, value: float, baseline: float) -> None:
    print(f"| {metric} (lower is better) | {value:.1f} µs | {baseline:.1f} µs | "
          f"{value / baseline:.2f}x |", flush=True)


def ms_row(metric: str, value: float, baseline: float) -> None:
    print(f"| {metric} (lower is better) | {value * 1e3:.2f} ms | {baseline * 1e3:.2f} ms | "
          f"{value / baseline:.2f}x |", flush=True)


def timed_cmd(cmd: list[str], **kw: object) -> float:
    return timed_out(cmd, **kw)[0]


def timed_out(cmd: list[str], **kw: object) -> tuple[float, str]:
    """Seconds a command took (after a ``sync``) and its output."""
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, check=True, capture_output=True, text=True,
                       **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t, str(r.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, work: str) -> None:
        self.work = work
        self.env = dict(os.environ, ARTIFACTFS_STORE=os.path.join(work, "store"),
                        XDG_CONFIG_HOME=os.path.join(work, "config"))
        self.mp = os.path.join(work, "mnt")
        os.makedirs(self.mp)
        os.makedirs(os.path.join(work, "store"))
        self.ids = itertools.count()
        self.minimal: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}

    def cli(self, *args: str) -> str:
        r = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                           check=False)
        if r.returncode != 0:
            raise RuntimeError(f"artifactfs {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def timed(self, *args: str) -> float:
        t = time.perf_counter()
        self.cli(*args)
        return time.perf_counter() - t

    def mount(self) -> None:
        self.cli("mount", self.mp, "--cache-dir", os.path.join(self.work, "cache"))

    def cleanup(self) -> None:
        self.cleanup_minimal()
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
    def start_minimal(self, xattrs: bool = False) -> str:
        """The minimal pwrite server's mount point (stopped in cleanup).  ``xattrs``: a second
        one that answers getxattr like a file system with extended attributes (ours has
        user.artifactfs.*), so the kernel asks it for security.capability before every
        write through the page cache, as it asks us."""
        key = "xattrs" if xattrs else "plain"
        if key not in self.minimal:
            local_dir = os.path.join(self.work, f"m-writer-data-{key}")
            os.makedirs(local_dir)
            mp = os.path.join(self.work, f"m-writer-{key}")
            os.makedirs(mp)
            server = os.path.join(self.work, "minimal_writer.py")
            with open(server, "w") as f:
                f.write(MINIMAL_WRITER)
            proc = subprocess.Popen([sys.executable, server, os.path.join(local_dir, "minimal"),
                                     mp, *(["xattrs"] if xattrs else [])])
            for _ in range(100):
                if mounted(mp):
                    break
                time.sleep(0.1)
            self.minimal[key] = (mp, proc)
        return self.minimal[key][0]

    def start_passthrough(self) -> str:
        """The mount point of tools/passthrough.py over a local directory (stopped in cleanup):
        the floor of this stack for tar -x and rsync -a."""
        if "pass" not in self.minimal:
            data, mp = os.path.join(self.work, "pass-data"), os.path.join(self.work, "pass")
            os.makedirs(data)
            os.makedirs(mp)
            server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "passthrough.py")
            proc = subprocess.Popen([sys.executable, server, data, mp])
            for _ in range(100):
                if mounted(mp):
                    break
                time.sleep(0.1)
            self.minimal["pass"] = (mp, proc)
        return self.minimal["pass"][0]

    def draft(self, name: str) -> str:
        path = os.path.join(self.mp, "drafts", "bench", name, f"w{next(self.ids)}")
        os.makedirs(path)
        return path

    def discard(self, draft: str) -> None:
        self.cli("draft", "discard", draft)

    def write_rate(self) -> None:
        src = os.path.join(self.work, "big.src")
        with open(src, "wb") as f:
            for _ in range(BIG >> 20):
                f.write(os.urandom(1 << 20))
        with open(src, "rb") as f:  # in the page cache, for both copies alike
            while f.read(1 << 24):
                pass
        draft = self.draft("big")
        local_dir = os.path.join(self.work, "local")
        os.makedirs(local_dir)
        minimal_mp = self.start_minimal()
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
        os.unlink(src)
        mib = BIG >> 20
        rate_row(f"cp of a {mib} MiB file into a draft (vs cp to local disk; higher is better)",
                 statistics.median(ours), statistics.median(local))
        rate_row(f"cp of a {mib} MiB file into a draft (vs minimal pyfuse3 pwrite server, "
                 "direct_io)", statistics.median(ours), statistics.median(minimal))

    # --- (c) small synchronous writes --------------------------------------------------------
    def small_writes(self) -> None:
        """µs per 4 KiB pwrite on a read-write handle (each one a synchronous FUSE WRITE)."""
        def per_write(path: str) -> float:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            buf = os.urandom(4096)
            try:
                for i in range(200):  # warm up
                    os.pwrite(fd, buf, i * 4096)
                t = time.perf_counter()
                for i in range(SMALL_WRITES):
                    os.pwrite(fd, buf, i * 4096)
                return (time.perf_counter() - t) / SMALL_WRITES * 1e6
            finally:
                os.close(fd)
                os.unlink(path)

        draft = self.draft("small")
        minimal_mp, xattrs_mp = self.start_minimal(), self.start_minimal(xattrs=True)
        local_dir = os.path.join(self.work, "local-small")
        os.makedirs(local_dir, exist_ok=True)
        ours, minimal, minimal_x, local = [], [], [], []
        for _ in range(max(5, TRIALS)):
            ours.append(per_write(os.path.join(draft, "db")))
            minimal.append(per_write(os.path.join(minimal_mp, "data")))
            minimal_x.append(per_write(os.path.join(xattrs_mp, "data")))
            local.append(per_write(os.path.join(local_dir, "db")))
        us_row("4 KiB synchronous write into a draft, per write (vs minimal pyfuse3 pwrite "
               "server: no xattrs, one request a write)", statistics.median(ours),
               statistics.median(minimal))
        us_row("4 KiB synchronous write into a draft, per write (vs minimal server answering "
               "getxattr: WRITE + GETXATTR security.capability a write, as ours)",
               statistics.median(ours), statistics.median(minimal_x))
        us_row("4 KiB synchronous write into a draft, per write (vs local disk)",
               statistics.median(ours), statistics.median(local))

    def sqlite(self) -> None:
        """sqlite's default rollback journal, synchronous=FULL: a bulk load and one-row
        transactions, in a draft, on the local disk and in the passthrough."""
        places = {"draft": self.draft("sqlite"), "local": os.path.join(self.work, "sq-local"),
                  "pass": os.path.join(self.start_passthrough(), "sq")}
        os.makedirs(places["local"])
        os.makedirs(places["pass"])
        load: dict[str, list[float]] = {k: [] for k in places}
        txn: dict[str, list[float]] = {k: [] for k in places}
        for trial in range(TRIALS):
            for key, where in places.items():
                a, b = sqlite_run(os.path.join(where, f"t{trial}.db"))
                load[key].append(a)
                txn[key].append(b)
        med = {k: (statistics.median(load[k]), statistics.median(txn[k])) for k in places}
        what = f"sqlite bulk load of {SQLITE_ROWS} rows (200 B) in one transaction into a draft"
        time_row(f"{what} (vs local disk)", med["draft"][0], med["local"][0])
        time_row(f"{what} (vs minimal pyfuse3 passthrough)", med["draft"][0], med["pass"][0])
        what = "sqlite one-row transaction (synchronous=FULL) in a draft, per transaction"
        ms_row(f"{what} (vs local disk)", med["draft"][1], med["local"][1])
        ms_row(f"{what} (vs minimal pyfuse3 passthrough)", med["draft"][1], med["pass"][1])

    # --- (d) tar -x and rsync -a ---------------------------------------------------------------
    def source_tree(self) -> str:
        """TREE_DIRS directories of TREE_FILES files, 1-30 KiB (32 700 entries, ~480 MiB)."""
        root = os.path.join(self.work, "tree")
        if not os.path.isdir(root):
            rnd = random.Random(7)
            for d in range(TREE_DIRS):
                sub = os.path.join(root, f"dir{d:03d}")
                os.makedirs(sub)
                for i in range(TREE_FILES):
                    with open(os.path.join(sub, f"file{i:03d}.bin"), "wb") as f:
                        f.write(rnd.randbytes(rnd.randint(1, TREE_KIB) << 10))
                    if i % 10 == 0:
                        os.chmod(os.path.join(sub, f"file{i:03d}.bin"), 0o755)
        return root

    def entries(self) -> int:
        return TREE_DIRS * (TREE_FILES + 1)

    def tar(self) -> None:
        root = self.source_tree()
        tarball = os.path.join(self.work, "tree.tar")
        subprocess.run(["tar", "-cf", tarball, "-C", root, "."], check=True)
        passthrough = self.start_passthrough()
        local, ours, floor = [], [], []
        for trial in range(TRIALS):
            dest = os.path.join(self.work, "tar-local")
            os.makedirs(dest)
            local.append(timed_cmd(["tar", "-xf", tarball, "-C", dest]))
            shutil.rmtree(dest)
            draft = self.draft("tar")
            ours.append(timed_cmd(["tar", "-xf", tarball, "-C", draft]))
            self.discard(draft)
            dest = os.path.join(passthrough, f"tar{trial}")
            os.makedirs(dest)
            floor.append(timed_cmd(["tar", "-xf", tarball, "-C", dest]))
            shutil.rmtree(dest)
        os.unlink(tarball)
        what = f"tar -x of a {self.entries()}-entry tarball"
        med = [statistics.median(v) for v in (ours, local, floor)]
        time_row(f"{what} into a draft (vs local disk)", med[0], med[1])
        time_row(f"{what} into a draft (vs minimal pyfuse3 passthrough: the stack's floor)",
                 med[0], med[2])
        time_row(f"{what} into the minimal pyfuse3 passthrough (vs local disk)", med[2], med[1])

    def rsync(self) -> None:
        root = self.source_tree() + "/"
        passthrough = self.start_passthrough()
        runs: dict[str, list[float]] = {k: [] for k in ("l1", "l2", "o1", "o2", "o3", "p1", "p2")}
        lines = {"o2": 0, "o3": 0}
        for trial in range(TRIALS):
            dest = os.path.join(self.work, "rsync-local") + "/"
            runs["l1"].append(timed_cmd(["rsync", "-a", root, dest]))
            runs["l2"].append(timed_cmd(["rsync", "-ai", root, dest]))
            shutil.rmtree(dest)
            dest = os.path.join(passthrough, f"rsync{trial}") + "/"
            runs["p1"].append(timed_cmd(["rsync", "-a", root, dest]))
            runs["p2"].append(timed_cmd(["rsync", "-ai", root, dest]))
            shutil.rmtree(dest)
            draft = self.draft(f"rsync{trial}") + "/"  # an artifact of its own: empty
            runs["o1"].append(timed_cmd(["rsync", "-a", root, draft]))
            t, out = timed_out(["rsync", "-ai", root, draft])
            runs["o2"].append(t)
            lines["o2"] = max(lines["o2"], len(out.splitlines()))
            self.cli("commit", draft, "--type", "dataset")
            again = self.draft(f"rsync{trial}") + "/"  # a new draft of the version just made
            t, out = timed_out(["rsync", "-ai", *README_RSYNC, root, again])
            runs["o3"].append(t)
            lines["o3"] = max(lines["o3"], len(out.splitlines()))
            self.discard(again)
        med = {k: statistics.median(v) for k, v in runs.items()}
        n = self.entries()
        floor = "minimal pyfuse3 passthrough: the stack's floor"
        time_row(f"rsync -a of a {n}-entry tree into an empty draft (vs local disk)", med["o1"],
                 med["l1"])
        time_row(f"rsync -a of a {n}-entry tree into an empty draft (vs {floor})", med["o1"],
                 med["p1"])
        time_row(f"rsync -a of a {n}-entry tree into the minimal pyfuse3 passthrough (vs local "
                 "disk)", med["p1"], med["l1"])
        again = f"rsync -a again, nothing changed, same draft: itemized {lines['o2']} lines"
        time_row(f"{again} (vs local repeat)", med["o2"], med["l2"])
        time_row(f"{again} (vs the passthrough's repeat)", med["o2"], med["p2"])
        time_row(f"rsync -a {' '.join(README_RSYNC)} again into a new draft of the version "
                 f"committed from it: itemized {lines['o3']} lines (vs local repeat)", med["o3"],
                 med["l2"])

    def cleanup_minimal(self) -> None:
        for mp, proc in self.minimal.values():
            subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True, check=False)
            proc.wait(10)
        self.minimal.clear()


def sqlite_run(path: str) -> tuple[float, float]:
    """Seconds of a bulk load of SQLITE_ROWS rows in one transaction, then seconds per one-row
    transaction (mean of SQLITE_TXNS), on a new database at ``path``."""
    rnd = random.Random(5)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(v) VALUES (?)",
                        ((rnd.randbytes(200),) for _ in range(SQLITE_ROWS)))
        con.execute("COMMIT")
        load = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(SQLITE_TXNS):
            con.execute("INSERT INTO t(v) VALUES (?)", (rnd.randbytes(200),))
        return load, (time.perf_counter() - t) / SQLITE_TXNS
    finally:
        con.close()


def small_tree(root: str, n: int, seed: int) -> str:
    rnd = random.Random(seed)
    for i in range(n):
        d = os.path.join(root, f"d{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1, 8) << 10))
    return root


def s3(work: str) -> None:
    """put and commit of S3_FILES small files to S3 (moto, its own process) against boto3."""
    port = free_port()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    moto = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = Bench(os.path.join(work, "s3"))
    b.env.update(aws, ARTIFACTFS_STORE="s3://bench/store")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        upload = os.path.join(b.work, "upload.py")
        with open(upload, "w") as f:
            f.write(BOTO3_UPLOAD)
        env = dict(os.environ, **aws)
        subprocess.run([sys.executable, "-c", "import boto3; c = boto3.client('s3'); "
                        "c.create_bucket(Bucket='bench'); c.create_bucket(Bucket='raw')"],
                       env=env, check=True)
        put_src = small_tree(os.path.join(b.work, "put"), S3_FILES, 1)
        commit_src = small_tree(os.path.join(b.work, "commit"), S3_FILES, 2)
        base = [timed_cmd([sys.executable, upload, put_src, "raw"], env=env)]
        put = timed_cmd([*CLI, "put", put_src, "--name", "bench/s3put", "--type", "dataset"],
                        env=b.env)
        b.mount()
        draft = b.draft("s3commit")
        subprocess.run(["cp", "-r", f"{commit_src}/.", draft], check=True)
        commit = timed_cmd([*CLI, "commit", draft, "--type", "dataset"], env=b.env)
        again = b.draft("s3commit")  # the same bytes written again: an unchanged commit
        subprocess.run(["cp", "-r", f"{commit_src}/.", again], check=True)
        recommit = timed_cmd([*CLI, "commit", again], env=b.env)
        base.append(timed_cmd([sys.executable, upload, commit_src, "raw"], env=env))
    finally:
        b.cleanup()
        moto.terminate()
        moto.wait(10)
    rate = statistics.mean(S3_FILES / t for t in base)
    rate_row(f"S3 put of {S3_FILES} small files (vs boto3 upload_file, 16 threads; files/s)",
             S3_FILES / put, rate, "files/s")
    rate_row(f"S3 commit of a draft of {S3_FILES} small files (vs boto3 upload_file, 16 "
             "threads; files/s)", S3_FILES / commit, rate, "files/s")
    time_row(f"S3 commit of the same {S3_FILES} files written again into a new draft (vs the "
             "first commit)", recommit, commit)


def main() -> None:
    only = os.environ.get("BENCH_ONLY", "write").split(",")
    parts = [p for p in PARTS if p in only or "write" in only]
    if not parts:
        return
    work = tempfile.mkdtemp(prefix="artifactfs-bench-commit-", dir=os.environ.get("BENCH_DIR"))
    b = Bench(work)
    try:
        if set(parts) - {"s3"}:
            b.mount()
        if "commit" in parts:
            b.commit_one("nested", 50)
            b.commit_one("flat", 1)
        if "cp" in parts:
            b.write_rate()
        if "smallwrite" in parts:
            b.small_writes()
        if "sqlite" in parts:
            b.sqlite()
        if "tar" in parts:
            b.tar()
        if "rsync" in parts:
            b.rsync()
        b.cleanup()
        if "s3" in parts:
            s3(work)
    finally:
        b.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
