"""Core benchmark: put/get through the CLI against baselines measured in the same run.

Prints markdown table rows ``| metric | value | baseline | ratio |``.  Sizes shrink with
BENCH_SMALL=1 (a quick smoke run).  As root, the page cache is dropped before every timed
step so reads are first reads for the tool and the baseline alike.  Re-puts use the digest
hints of statcache.py (in the run's own cache directory); ``--rehash`` rows show the cost
without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import drop_caches, time_row

SMALL = os.environ.get("BENCH_SMALL") == "1"
BIG_FILES, BIG_SIZE = (4, 32 << 20) if SMALL else (16, 128 << 20)
SMALL_FILES = 2000 if SMALL else 20000
CLI = [sys.executable, "-m", "artifactfs"]
SETTLE = 2.1  # s: put records digest hints only for files this old (statcache.RACY_NS)



def timed(cmd: list[str] | str, **kw: object) -> float:
    drop_caches()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, shell=isinstance(cmd, str),
                   **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t



def main() -> None:
    work = tempfile.mkdtemp(prefix="artifactfs-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        for i in range(BIG_FILES):
            with open(os.path.join(src, f"shard-{i:02d}.bin"), "wb") as f:
                for _ in range(BIG_SIZE // (8 << 20)):
                    f.write(os.urandom(8 << 20))
        total_gib = BIG_FILES * BIG_SIZE / 2**30
        store = os.path.join(work, "store")
        env = dict(os.environ, ARTIFACTFS_STORE=store,
                   ARTIFACTFS_CACHE_DIR=os.path.join(work, "cache"))  # put's digest hints
        base = timed(f"cp -r {src} {work}/copy && sha256sum {work}/copy/* >/dev/null")
        put = timed([*CLI, "put", src, "--name", "bench/big", "--type", "dataset"], env=env)
        time_row(f"put {BIG_FILES} files, {total_gib:.2f} GiB (vs cp -r + sha256sum)", put, base)
        again = timed([*CLI, "put", src, "--name", "bench/big", "--type", "dataset"], env=env,
                      stderr=subprocess.DEVNULL)  # "unchanged: …"
        time_row(f"re-put {BIG_FILES} files, {total_gib:.2f} GiB, unchanged (vs first put)",
                 again, put)
        shutil.rmtree(os.path.join(work, "copy"))
        base = timed(f"cp -r {src} {work}/copy")
        get = timed([*CLI, "get", "bench/big", "--root", f"{work}/got"], env=env)
        time_row(f"get {total_gib:.2f} GiB (vs cp -r)", get, base)
        shutil.rmtree(os.path.join(work, "copy"))
        shutil.rmtree(os.path.join(work, "got"))

        many = os.path.join(work, "many")
        for i in range(SMALL_FILES):
            d = os.path.join(many, f"d{i // 1000:03d}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
                f.write(f"file {i}\n" * 10)
        base = timed(f"cp -r {many} {work}/copy2 && find {work}/copy2 -type f -exec sha256sum {{}} + >/dev/null")
        time.sleep(SETTLE)  # files settled before the put, as datasets are
        put = timed([*CLI, "put", many, "--name", "bench/many", "--type", "dataset"], env=env)
        time_row(f"put {SMALL_FILES} small files (vs cp -r + sha256sum)", put, base)
        many_f = os.path.join(many, "d000", "f000000.txt")
        with open(many_f, "a") as f:
            f.write("changed\n")
        again = timed([*CLI, "put", many, "--name", "bench/many", "--type", "dataset"], env=env)
        time_row(f"re-put {SMALL_FILES} files, one changed (vs first put)", again, put)
        with open(many_f, "a") as f:
            f.write("changed again\n")
        rehash = timed([*CLI, "put", many, "--name", "bench/many", "--type", "dataset",
                        "--rehash"], env=env)
        time_row(f"re-put {SMALL_FILES} files, one changed, --rehash (vs first put)", rehash,
                 put)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
