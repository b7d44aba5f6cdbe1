"""Lineage from reads: reading through the mount as a run must not be slower than without.

Prints ``| metric | artifactfs | baseline | ratio |`` rows: files/s of reading every file of a
small-file version (warm: the kernel's page cache holds the bytes, so each file costs an
OPEN/READ/RELEASE round trip — the path the consumer check sits on) in a process with
``ARTIFACTFS_RUN`` set (new process each pass, so every pass looks its pid up once) against
the same pass without it; medians of BENCH_TRIALS interleaved passes.  BENCH_SMALL=1 shrinks
the tree.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SMALL = os.environ.get("BENCH_SMALL") == "1"
FILES = 500 if SMALL else 5000
TRIALS = int(os.environ.get("BENCH_TRIALS", "3" if SMALL else "5"))
CLI = [sys.executable, "-m", "artifactfs"]
READER = ("import os, sys, time\n"
          "root = sys.argv[1]\n"
          "names = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]\n"
          "t = time.perf_counter()\n"
          "for p in names:\n"
          "    with open(p, 'rb') as f:\n"
          "        f.read()\n"
          "print(len(names) / (time.perf_counter() - t))\n")


def main() -> None:
    top = tempfile.mkdtemp(prefix="afs-bench-lineage-", dir=os.environ.get("BENCH_DIR"))
    env = dict(os.environ, ARTIFACTFS_STORE=os.path.join(top, "store"))
    env.pop("ARTIFACTFS_RUN", None)
    src, mnt = os.path.join(top, "src"), os.path.join(top, "mnt")
    for i in range(FILES):
        d = os.path.join(src, f"d{i % 50:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(os.urandom(4096))
    os.mkdir(mnt)
    try:
        subprocess.run([*CLI, "put", src, "--name", "bench/small", "--type", "dataset"],
                       env=env, check=True, capture_output=True)
        subprocess.run([*CLI, "mount", mnt, "--cache-dir", os.path.join(top, "cache")],
                       env=env, check=True, capture_output=True)
        root = os.path.join(mnt, "bench", "small", "v0")
        read = [sys.executable, "-c", READER, root]
        subprocess.run(read, env=env, check=True, capture_output=True)  # warm the caches
        runs, plain = [], []
        for _ in range(TRIALS):
            out = subprocess.run(read, env=dict(env, ARTIFACTFS_RUN="bench/r1"), check=True,
                                 capture_output=True, text=True).stdout
            runs.append(float(out))
            plain.append(float(subprocess.run(read, env=env, check=True, capture_output=True,
                                              text=True).stdout))
        time.sleep(0.2)
        a, b = statistics.median(runs), statistics.median(plain)
        print(f"| warm read of {FILES} small files as a run (ARTIFACTFS_RUN), files/s | "
              f"{a:.0f} | {b:.0f} (no run) | {a / b:.2f}x |", flush=True)
    finally:
        subprocess.run([*CLI, "unmount", mnt], env=env, capture_output=True)
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
